"""The local prediction API's lifecycle: stop never hangs, whether the server ran or not."""

from __future__ import annotations

import threading
from typing import Any

from edge_agent.http_api import PredictionApi
from firmware_configs.schema import ApiSection


class _NoModel:
    device_id = "api-1"
    current_model = None

    def counters(self) -> dict[str, Any]:
        return {}


def _stop_within(api: PredictionApi, seconds: float) -> bool:
    t = threading.Thread(target=api.stop, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


def test_stop_before_start_returns() -> None:
    api = PredictionApi(_NoModel(), ApiSection(enabled=True, port=0))
    assert _stop_within(api, 5.0), "stop() of a never-started API hung"


def test_stop_twice_after_start_returns() -> None:
    api = PredictionApi(_NoModel(), ApiSection(enabled=True, port=0))
    api.start()
    assert _stop_within(api, 5.0)
    assert _stop_within(api, 5.0), "a second stop() hung"
