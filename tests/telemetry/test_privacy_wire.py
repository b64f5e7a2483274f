"""Privacy on the wire: a real agent (video file source, real model, the default plugins as
``edgeline agent run`` loads them) talks to a real broker while a subscriber on ``#`` records every
message. No payload carries image bytes or a feature vector; every telemetry payload is exactly a
schema window; the device id never appears in telemetry."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.assembly import cloud_link_of
from edge_agent.plugin_loader import DEFAULT_PLUGINS, load_plugins
from edge_agent.runtime import Agent
from edge_agent.telemetry.privacy import pseudonym
from edgeline.core.mqtt_link import wait_until
from edgeline.core.protocol.telemetry import TelemetryWindow, parse_window
from edgeline.demo.broker import MosquittoBroker
from firmware_configs.loader import parse_config
from tests.telemetry.conftest import SECRET, frames

IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*", b"\x00\x00\x00\x0cjP")
IMAGE_MAGIC_B64 = tuple(base64.b64encode(m + b"\x00\x00")[:6] for m in IMAGE_MAGIC if len(m) >= 3)
WINDOW_FIELDS = set(TelemetryWindow.model_fields) - {"schema_"} | {"schema"}


def float_runs(value: Any) -> int:
    """Longest list of non-integer numbers anywhere in a JSON value (a feature vector would be one)."""
    if isinstance(value, dict):
        return max((float_runs(v) for v in value.values()), default=0)
    if isinstance(value, list):
        own = len(value) if value and all(isinstance(v, float) and not v.is_integer() for v in value) else 0
        return max([own, *(float_runs(v) for v in value)])
    return 0


def longest_list(value: Any) -> int:
    if isinstance(value, dict):
        return max((longest_list(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max([len(value), *(longest_list(v) for v in value)])
    return 0


@pytest.mark.parametrize("epsilon", [None, 4.0])
def test_nothing_but_aggregates_leaves_the_device(
    mosquitto: MosquittoBroker, tmp_path: Path, ref_bundle: Path, key_dir: Path, epsilon: float | None
) -> None:
    video = tmp_path / "line.avi"
    images = frames(120, seed=40) + frames(120, seed=41, dark=70)
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    for img in images:
        writer.write(img)
    writer.release()
    secret_file = tmp_path / "fleet.key"
    secret_file.write_text(SECRET.hex())

    seen: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            seen.append((msg.topic, bytes(msg.payload)))

    spy = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="spy", protocol=mqtt.MQTTv5)
    spy.on_message = on_message
    spy.on_connect = lambda c, *_: c.subscribe("#", qos=1)
    spy.connect("127.0.0.1", mosquitto.port)
    spy.loop_start()
    try:
        assert wait_until(lambda: spy.is_connected(), 10)
        cfg = parse_config(
            {
                "device": {"id": "line-7-cam-2", "groups": ["hall-1"]},
                "source": {"kind": "file", "path": str(video)},
                "model": {"bundle": str(ref_bundle), "trust_file": str(key_dir / "trust.json")},
                "sinks": {"jsonl": {"path": str(tmp_path / "line.jsonl")}},
                "status": {"path": str(tmp_path / "status.json")},
                "cloud": {"port": mosquitto.port, "heartbeat_s": 0.2},
                "updater": {"state_dir": str(tmp_path / "state"), "trust_file": str(key_dir / "trust.json")},
                "telemetry": {
                    "window_frames": 40,
                    "min_frames": 20,
                    "pseudonym_key_file": str(secret_file),
                    "epsilon": epsilon,
                },
            },
            "privacy-test",
        )
        plugins = load_plugins(cfg, DEFAULT_PLUGINS, required=False)
        assert "telemetry" in {p.name for p in plugins}
        link = cloud_link_of(plugins)
        assert link is not None
        link.connect(10)
        assert Agent(cfg, plugins=plugins).run() == 0
        assert wait_until(lambda: sum("/telemetry" in t for t, _ in seen) >= 6, 10)
        link.stop()
    finally:
        spy.loop_stop()
        spy.disconnect()

    with lock:
        messages = list(seen)
    assert messages
    windows = []
    for topic, payload in messages:
        assert not payload.startswith(IMAGE_MAGIC), f"image bytes on {topic}"
        assert not any(m in payload for m in IMAGE_MAGIC_B64), f"base64 image on {topic}"
        body = json.loads(payload)  # every message is JSON, none is binary
        assert float_runs(body) <= 8, f"a float vector on {topic}"
        assert longest_list(body) <= 64, f"a long array on {topic}"
        if topic.endswith("/telemetry"):
            assert set(body) <= WINDOW_FIELDS, f"unexpected fields {set(body) - WINDOW_FIELDS}"
            assert b"line-7-cam-2" not in payload
            windows.append(parse_window(payload))
    assert len(windows) == 6  # 240 frames / 40
    assert {w.device for w in windows} == {pseudonym("line-7-cam-2", SECRET)}
    assert all(w.noise_epsilon == epsilon for w in windows)
    assert not any(b"drift_alarm" in p for _, p in messages)
    if epsilon is not None:
        # 40-frame windows under epsilon=4 noise: too noisy to see a brightness shift (docs/drift.md)
        return
    # the darkened half drifted, and the line (not the cloud) got the local alarm
    assert [w.drift["brightness"].drifted for w in windows] == [False] * 3 + [True] * 3
    local = [json.loads(x) for x in (tmp_path / "line.jsonl").read_text().splitlines()]
    assert [r["channel"] for r in local if r.get("kind") == "drift_alarm"].count("input") == 1
