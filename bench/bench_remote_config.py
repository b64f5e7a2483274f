"""Signed remote configuration on a real agent process and a local Mosquitto: what a change costs the line.

* floor: a cold start of the same agent (``edgeline agent run`` launched -> first verdict in its JSONL
  log), measured in the same run: the least a restart can cost.
* hot: a config changing the JSONL sink's path and the decision threshold, pushed through the cloud's
  pusher: seconds from the push to the device saying it applied it (its retained config state) and to
  its commit after the trial, and verdicts lost across the change (every frame id must appear once
  across the old and the new log).
* restart: a config changing ``inference.stats_every`` (a restart key): the gap in the line's verdicts
  (the longest pause between two verdicts, by their frame timestamps), the push -> commit time, and the
  gap as a multiple of the cold start.

    python bench/bench_remote_config.py [--rounds 3] [--fps 50]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit  # noqa: E402


def _records(*logs: Path) -> list[dict[str, Any]]:
    out = []
    for log in logs:
        if log.exists():
            out += [r for r in map(json.loads, log.read_text().splitlines()) if r.get("type") == "verdict"]
    return out


def _wait(pred: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {pred}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fps", type=float, default=50.0)
    args = ap.parse_args()

    import cv2
    import numpy as np

    from cloud_registry.remote_config import ConfigPusher, ConfigTarget
    from cloud_registry.store import open_store
    from converters.keys import KeyPaths, init_keys, load_signing_key
    from edgeline.core.mqtt_link import LinkSettings, MqttLink
    from edgeline.core.protocol.remote_config import ConfigState, parse_config_state
    from edgeline.core.protocol.topics import Topics
    from edgeline.demo.broker import MosquittoBroker
    from edgeline.demo.devices import launch_agent
    from firmware_configs.writer import render_toml
    from tests.factories import write_tiny_bundle

    work = Path(tempfile.mkdtemp(prefix="bench-remote-config-"))
    broker = MosquittoBroker(work / "mosquitto")
    broker.start()
    keys = work / "keys"
    init_keys(keys)
    signer = load_signing_key(keys)
    bundle = write_tiny_bundle(work / "bundle", signer)
    frames = work / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        cv2.imwrite(str(frames / f"f{i:03d}.png"), rng.integers(0, 255, (48, 48), dtype=np.uint8))
    logs = work / "logs"
    states: list[ConfigState] = []
    link = MqttLink(LinkSettings(port=broker.port, client_id="bench-config-cloud", clean_start=True))
    link.connect(10)
    topics = Topics()

    def on_state(_topic: str, payload: bytes, _retained: bool) -> None:
        if payload:
            states.append(parse_config_state(payload))

    link.subscribe(topics.all_device_config_states(), on_state)
    store = open_store(f"sqlite:///{work / 'registry.db'}")
    pusher = ConfigPusher(link, topics, signer, store)

    device = "bench-dev-0"

    def config_file(state_dir: Path) -> Path:
        sections = {
            "device": {"id": device},
            "source": {"kind": "folder", "path": str(frames), "loop": True, "max_fps": args.fps},
            "model": {"bundle": str(bundle), "trust_file": str(KeyPaths(keys).trust)},
            "status": {"path": str(work / "status.json"), "interval_s": 0.05},
            "cloud": {"port": broker.port, "heartbeat_s": 1.0},
            "updater": {"state_dir": str(state_dir), "trust_file": str(KeyPaths(keys).trust)},
            "telemetry": {"enabled": False},
            "remote_config": {"enabled": True, "trial_s": 1.0, "trial_frames": 5},
            "sinks.jsonl": {"path": str(logs / "v0.jsonl")},
        }
        path = work / "agent.toml"
        path.write_text(render_toml(sections))
        return path

    def push(overlay: dict[str, Any]) -> tuple[int, float]:
        t0 = time.monotonic()
        return pusher.push(ConfigTarget.parse(device), overlay, actor="bench").version, t0

    def last() -> ConfigState | None:
        mine = [s for s in states if s.device_id == device]
        return mine[-1] if mine else None

    cold: list[float] = []
    hot_applied: list[float] = []
    hot_committed: list[float] = []
    hot_lost: list[int] = []
    restart_gap: list[float] = []
    restart_committed: list[float] = []
    try:
        for r in range(args.rounds):
            device = f"bench-dev-{r}"  # a fresh device each round: the last round's document stays retained
            shutil.rmtree(logs, ignore_errors=True)
            logs.mkdir()
            states.clear()
            t0 = time.monotonic()
            proc = launch_agent(config_file(work / f"state-{r}"), work / "agent.log", {"PYTHONPATH": str(ROOT)})
            _wait(lambda: _records(logs / "v0.jsonl"))
            cold.append(time.monotonic() - t0)
            _wait(lambda: (s := last()) is not None and s.version == 0)
            time.sleep(0.5)
            # hot: a new log and a new threshold
            v, t0 = push({"sinks": {"jsonl": {"path": str(logs / "v1.jsonl")}}, "decision": {"threshold": 0.4}})
            _wait(lambda v=v: (s := last()) is not None and s.trial == v)
            hot_applied.append(time.monotonic() - t0)
            _wait(lambda v=v: (s := last()) is not None and s.version == v and s.trial is None)
            hot_committed.append(time.monotonic() - t0)
            time.sleep(0.5)
            # restart: a key the running agent cannot take
            v, t0 = push({"sinks": {"jsonl": {"path": str(logs / "v1.jsonl")}}, "inference": {"stats_every": 3}})
            _wait(lambda v=v: (s := last()) is not None and s.version == v and s.trial is None)
            restart_committed.append(time.monotonic() - t0)
            time.sleep(0.5)
            proc.terminate()
            proc.wait(20)
            recs = _records(logs / "v0.jsonl", logs / "v1.jsonl")
            before_restart = [x for x in recs if x["frame_id"] >= 0]
            # frame ids start again at the restart: the hot change is judged on the first run's ids
            first_run: list[int] = []
            for x in before_restart:
                if first_run and x["frame_id"] < first_run[-1]:
                    break
                first_run.append(x["frame_id"])
            ids = sorted(first_run)
            hot_lost.append((ids[-1] - ids[0] + 1) - len(set(ids)))
            ts = [x["ts"] for x in recs]
            restart_gap.append(max(b - a for a, b in itertools.pairwise(ts)))
    finally:
        link.stop()
        store.close()
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    results = {
        "rounds": args.rounds,
        "fps": args.fps,
        "floor_cold_start_s": med(cold),
        "hot_push_to_applied_s": med(hot_applied),
        "hot_push_to_committed_s": med(hot_committed),
        "hot_verdicts_lost": max(hot_lost),
        "restart_verdict_gap_s": med(restart_gap),
        "restart_push_to_committed_s": med(restart_committed),
        "restart_gap_over_cold_start": med(restart_gap) / med(cold),
        "raw": {"cold": cold, "hot_applied": hot_applied, "restart_gap": restart_gap},
    }
    return emit("remote_config", results, {"no verdict lost across a hot change": max(hot_lost) == 0})


if __name__ == "__main__":
    raise SystemExit(main())
