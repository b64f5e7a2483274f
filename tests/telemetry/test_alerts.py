"""Alerts fire once per episode, through a real HTTP webhook and a real command, and survive a
restart of the service without firing again."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.telemetry.alerts import AlertEngine, AlertError, CommandSink, WebhookSink
from cloud_registry.telemetry.store import TelemetryStore
from edgeline.core.protocol.telemetry import CONF_BINS, TelemetryWindow
from tests.telemetry.conftest import SimClock


class Hook:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200


@pytest.fixture
def webhook() -> Iterator[tuple[str, Hook]]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.received.append(json.loads(body))
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", hook
    finally:
        server.shutdown()
        server.server_close()


def window(device: str, *, drifted: bool = False, label_drift: bool = False, group: str = "hall-1") -> TelemetryWindow:
    return TelemetryWindow.model_validate(
        {
            "key": uuid.uuid4().hex,
            "device": device * 32,
            "group": group,
            "model": {"name": "plates", "version": 2, "sha256": "c" * 64},
            "start": 0.0,
            "end": 60.0,
            "frames": 100,
            "class_counts": {"ok": 100},
            "confidence": [0] * (CONF_BINS - 1) + [100],
            "input_stats": {},
            "drift": {
                "brightness": {"psi": 2.0 if drifted else 0.01, "threshold": 0.3, "drifted": drifted},
                "class_mix": {"psi": 1.0 if label_drift else 0.0, "threshold": 0.2, "drifted": label_drift},
            },
        }
    )


def test_group_drift_fires_once_and_resolves_once(tmp_path: Path, webhook: tuple[str, Hook]) -> None:
    url, hook = webhook
    store = TelemetryStore(tmp_path / "t.db")
    engine = AlertEngine(store, [WebhookSink(url)])
    for _ in range(4):
        assert engine.on_window(window("a")) == []
        assert engine.on_window(window("b")) == []
    for _ in range(3):
        engine.on_window(window("a", drifted=True))
    assert [(a["kind"], a["state"]) for a in hook.received] == [("drift", "firing")]
    assert hook.received[0]["scope"] == "plates/v2/hall-1"
    assert hook.received[0]["details"]["devices_drifting"] == 1
    # the second device drifting too, many more drifted windows: still the same episode
    for _ in range(10):
        engine.on_window(window("a", drifted=True))
        engine.on_window(window("b", drifted=True))
    assert len(hook.received) == 1
    # a restarted service (new engine, same store) remembers the open episode
    engine2 = AlertEngine(store, [WebhookSink(url)])
    engine2.on_window(window("a", drifted=True))
    assert len(hook.received) == 1
    for _ in range(3):
        engine2.on_window(window("a"))
    assert len(hook.received) == 1  # device b still drifting: the group's episode stays open
    for _ in range(3):
        engine2.on_window(window("b"))
    assert [(a["kind"], a["state"]) for a in hook.received] == [("drift", "firing"), ("drift", "resolved")]
    assert engine2.active() == []


def test_label_drift_is_its_own_alert(tmp_path: Path, webhook: tuple[str, Hook]) -> None:
    url, hook = webhook
    engine = AlertEngine(TelemetryStore(tmp_path / "t.db"), [WebhookSink(url)])
    for _ in range(6):
        engine.on_window(window("a", label_drift=True))
    assert [(a["kind"], a["state"]) for a in hook.received] == [("label_drift", "firing")]


def test_silent_device_and_aborted_rollout_fire_once(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    script = "import sys, os; open(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')"
    clock = SimClock(10_000.0)
    engine = AlertEngine(
        TelemetryStore(tmp_path / "t.db"),
        [CommandSink([sys.executable, "-c", script, str(out)])],
        silent_budget_s=90,
        clock=clock,
    )
    fleet = [("dev-1", 9_990.0), ("dev-2", 9_800.0)]
    for _ in range(3):
        engine.check_silent(fleet)
        engine.check_rollouts([("r1", "running", ""), ("r2", "aborted", "2 of 3 canaries failed")])
    fleet[1] = ("dev-2", 10_000.0)
    engine.check_silent(fleet)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(a["kind"], a["scope"], a["state"]) for a in got] == [
        ("device_silent", "dev-2", "firing"),
        ("rollout_aborted", "r2", "firing"),
        ("device_silent", "dev-2", "resolved"),
    ]
    assert "2 of 3 canaries failed" in got[1]["summary"]


def test_an_unreachable_webhook_is_counted_and_does_not_stop_alerting(tmp_path: Path,
                                                                       webhook: tuple[str, Hook]) -> None:  # fmt: skip
    url, hook = webhook
    hook.status = 500
    store = TelemetryStore(tmp_path / "t.db")
    engine = AlertEngine(store, [WebhookSink(url, timeout_s=2)])
    engine.check_rollouts([("r9", "aborted", "x")])
    assert engine.failures == 1 and store.counters()["alerts.failed"] == 1
    assert len(hook.received) == 3  # three attempts
    with pytest.raises(AlertError):
        WebhookSink("ftp://example")
    with pytest.raises(AlertError, match="exited 3"):
        CommandSink([sys.executable, "-c", "raise SystemExit(3)"]).send(engine.sent[0])
