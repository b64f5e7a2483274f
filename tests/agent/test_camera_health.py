"""Health follows the camera, not only the model: while a live camera is lost (or frozen, which the
stall watchdog turns into a loss) ``/healthz`` answers 503 ``degraded`` and the status file says so;
when frames flow again both say ``ok``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edge_agent.inference import load_and_check
from edge_agent.runtime import Agent
from edge_agent.status import health
from edgeline.core.protocol.signing import TrustStore
from tests.agent.helpers import MjpegCamera, make_config, wait_for


def healthz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def file_health(path: Path) -> str:
    try:
        return str(json.loads(path.read_text("utf-8"))["health"]["status"])
    except (OSError, ValueError, KeyError):
        return ""


def test_health_is_degraded_while_the_camera_is_lost_or_frozen(
    tmp_path: Path, camera: MjpegCamera, tiny_bundle: Path, trust: TrustStore
) -> None:
    cfg = make_config(
        tmp_path,
        {
            "kind": "url",
            "url": camera.url,
            "open_timeout_ms": 1000,
            "read_timeout_ms": 1000,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.3,
            "stall_min_s": 0.3,
            "stall_max_s": 0.6,
        },
        api={"enabled": True, "port": 0},
    )
    agent = Agent(cfg, model=load_and_check(tiny_bundle, trust))
    status_file = tmp_path / "status.json"
    agent.start()
    try:
        url = agent.api.url
        assert wait_for(lambda: agent.counters()["frames"]["inspected"] >= 5, 10)
        assert healthz(url) == (200, {"ok": True, "reasons": [], "status": "ok"})
        assert wait_for(lambda: file_health(status_file) == "ok", 5)

        camera.stop()  # lost
        assert wait_for(lambda: healthz(url)[0] == 503, 10)
        _code, doc = healthz(url)
        assert doc["status"] == "degraded" and any(r.startswith("camera") for r in doc["reasons"]), doc
        assert wait_for(lambda: file_health(status_file) == "degraded", 5)

        camera.start()
        assert wait_for(lambda: healthz(url)[0] == 200, 10)
        assert wait_for(lambda: file_health(status_file) == "ok", 5)

        camera.freeze()  # stalled, connection open
        assert wait_for(lambda: any("stalled" in r for r in healthz(url)[1]["reasons"]), 10)
        camera.thaw()
        assert wait_for(lambda: healthz(url)[0] == 200, 10)
    finally:
        agent.stop()


def test_health_rules() -> None:
    ok = {"model": {"name": "m"}, "camera": {"state": "STREAMING", "last_error": ""}}
    assert health(ok)["status"] == "ok"
    assert health({**ok, "model": None})["reasons"] == ["no model serving"]
    lost = {**ok, "camera": {"state": "RECONNECTING", "last_error": "stalled: no new frame for 5.0 s"}}
    assert health(lost) == {
        "status": "degraded",
        "ok": False,
        "reasons": ["camera reconnecting: stalled: no new frame for 5.0 s"],
    }
    assert health({**ok, "camera": {"state": "CONNECTING", "last_error": ""}})["status"] == "ok"  # starting up
    assert health({**ok, "camera": {"state": "CONNECTING", "last_error": "camera lost"}})["status"] == "degraded"
    assert health({**ok, "camera": {"state": "FAILED", "last_error": "x"}})["status"] == "degraded"
    assert health({**ok, "camera": {"state": "ENDED", "last_error": ""}})["status"] == "ok"  # a file ended
    assert health({}, has_model=True)["status"] == "ok"  # the API asks its host for the model
    assert health(ok, has_model=False)["reasons"] == ["no model serving"]
