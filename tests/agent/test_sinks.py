"""Verdict sinks: JSONL rotation, a local MQTT topic on a real Mosquitto, a webhook, a command hook,
and the isolation of failing and hanging sinks from inference."""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge_agent.inference import load_and_check
from edge_agent.runtime import Agent
from edge_agent.sinks import JsonlSink, SinkWorker
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.topics import line_verdict_topic
from edgeline.demo.broker import MosquittoBroker
from tests.agent.conftest import N_VIDEO
from tests.agent.helpers import Recorder, make_config, read_jsonl, wait_for


def test_jsonl_rotates_by_size_and_keeps_the_newest_records(tmp_path: Path) -> None:
    path = tmp_path / "log" / "verdicts.jsonl"
    sink = JsonlSink(path, max_bytes=1024, backups=2)
    for i in range(200):
        sink.write({"type": "verdict", "frame_id": i, "pad": "x" * 20})
    sink.close()
    files = [path.with_name("verdicts.jsonl.2"), path.with_name("verdicts.jsonl.1"), path]
    assert all(f.exists() and f.stat().st_size <= 1024 for f in files)
    assert not path.with_name("verdicts.jsonl.3").exists()
    kept = [r["frame_id"] for f in files for r in read_jsonl(f)]
    assert kept == list(range(200 - len(kept), 200))  # contiguous, newest last, oldest rotated away
    assert sink.rotations > 2


def test_jsonl_appends_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    for run in range(2):
        sink = JsonlSink(path)
        sink.write({"run": run})
        sink.close()
    assert [r["run"] for r in read_jsonl(path)] == [0, 1]


def test_verdicts_reach_a_local_mqtt_topic(
    tmp_path: Path, mosquitto: MosquittoBroker, video_file: Path, tiny_bundle: Path, trust: TrustStore
) -> None:
    got: list[dict[str, Any]] = []
    listener = MqttLink(LinkSettings(port=mosquitto.port, client_id="line-plc", clean_start=True))
    listener.subscribe(line_verdict_topic("dev-1"), lambda _t, p, _r: got.append(json.loads(p)), qos=1)
    listener.connect(10)
    try:
        cfg = make_config(
            tmp_path,
            {"kind": "file", "path": str(video_file)},
            sinks={"mqtt": {"port": mosquitto.port, "qos": 1, "events": False}},
        )
        agent = Agent(cfg, model=load_and_check(tiny_bundle, trust))
        assert agent.run() == 0
        assert wait_for(lambda: len(got) >= N_VIDEO, 10)
    finally:
        listener.stop()
    c = agent.counters()
    assert c["frames"]["inspected"] == N_VIDEO
    assert c["sinks"]["mqtt"]["delivered"] == N_VIDEO and c["sinks"]["mqtt"]["errors"] == 0
    assert [r["frame_id"] for r in got] == list(range(N_VIDEO))
    assert all(r["type"] == "verdict" and r["device"] == "dev-1" for r in got)


def test_a_dead_broker_only_costs_sink_errors(
    tmp_path: Path, mosquitto: MosquittoBroker, video_file: Path, tiny_bundle: Path, trust: TrustStore
) -> None:
    mosquitto.kill()
    cfg = make_config(
        tmp_path,
        {"kind": "file", "path": str(video_file)},
        sinks={"mqtt": {"port": mosquitto.port, "events": False, "connect_wait_s": 0.2}},
    )
    agent = Agent(cfg, model=load_and_check(tiny_bundle, trust))
    assert agent.run() == 0
    c = agent.counters()
    assert c["frames"]["inspected"] == N_VIDEO
    assert c["sinks"]["mqtt"]["errors"] == N_VIDEO and c["sinks"]["mqtt"]["delivered"] == 0
    assert "not connected" in c["sinks"]["mqtt"]["last_error"]


class _Collector(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()


def test_webhook_gets_defects_and_command_hook_gets_json_lines(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust: TrustStore
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.received = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "hook.jsonl"
    script = (
        f"import sys\nwith open({str(out)!r}, 'ab') as f:\n    for line in sys.stdin.buffer:\n        f.write(line)\n"
    )
    try:
        cfg = make_config(
            tmp_path,
            {"kind": "file", "path": str(video_file)},
            sinks={
                "webhook": {
                    "url": f"http://127.0.0.1:{server.server_address[1]}/v",
                    "include": "defects",
                    "events": False,
                },
                "command": {
                    "argv": [sys.executable, "-c", script],
                    "mode": "stream",
                    "include": "all",
                    "events": False,
                },
            },
        )
        agent = Agent(cfg, model=load_and_check(tiny_bundle, trust))
        assert agent.run() == 0
    finally:
        server.shutdown()
        server.server_close()
    c = agent.counters()
    defects = c["verdicts"]["by_verdict"].get("defect", 0) + c["verdicts"]["uncertain"]
    received = server.received  # type: ignore[attr-defined]
    assert len(received) == defects > 0
    assert all(r["verdict"] == "defect" or r["uncertain"] for r in received)
    assert c["sinks"]["webhook"]["errors"] == 0
    lines = read_jsonl(out)
    assert [r["frame_id"] for r in lines] == list(range(N_VIDEO))
    assert c["sinks"]["command"] == {
        "offered": N_VIDEO,
        "delivered": N_VIDEO,
        "errors": 0,
        "dropped": 0,
        "pending": 0,
        "last_error": "",
    }


def test_failing_sinks_are_counted_and_never_stop_inference(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust: TrustStore
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cfg = make_config(
        tmp_path,
        {"kind": "file", "path": str(video_file)},
        sinks={
            "jsonl": {"path": str(blocker / "cannot" / "v.jsonl")},  # parent is a file: every write fails
            "webhook": {"url": f"http://127.0.0.1:{closed_port}/v", "timeout_s": 1},  # connection refused
            "command": {"argv": ["sh", "-c", "exit 3"], "include": "defects", "events": False},
        },
    )
    rec = Recorder()
    agent = Agent(cfg, plugins=[rec], model=load_and_check(tiny_bundle, trust))
    assert agent.run() == 0
    c = agent.counters()
    assert c["frames"]["inspected"] == N_VIDEO == len(rec.results)
    for name in ("jsonl", "webhook", "command"):
        s = c["sinks"][name]
        assert s["delivered"] == 0 and s["errors"] + s["dropped"] == s["offered"] > 0, (name, s)
    assert "cannot open" in c["sinks"]["jsonl"]["last_error"]
    assert "unreachable" in c["sinks"]["webhook"]["last_error"]
    assert "exited 3" in c["sinks"]["command"]["last_error"]


def test_a_hanging_sink_never_stops_inference(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust: TrustStore
) -> None:
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)  # accepts connections, never answers
    port = hang.getsockname()[1]
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(hang.accept()[0]), daemon=True).start()
    cfg = make_config(
        tmp_path,
        {"kind": "file", "path": str(video_file)},
        sinks={
            "jsonl": {"path": str(tmp_path / "v.jsonl")},
            "webhook": {"url": f"http://127.0.0.1:{port}/v", "timeout_s": 60, "queue_size": 5},
        },
    )
    agent = Agent(cfg, model=load_and_check(tiny_bundle, trust))
    agent.start()
    try:
        assert wait_for(lambda: agent.counters()["frames"]["inspected"] == N_VIDEO, 30)
        c = agent.counters()
        hook = c["sinks"]["webhook"]
        assert hook["delivered"] == 0 and hook["errors"] == 0  # still stuck in its first request
        assert hook["dropped"] >= N_VIDEO - 5  # its bounded queue overflowed, oldest records dropped
        assert wait_for(lambda: agent.sinks[0].idle(), 10)
        assert agent.counters()["sinks"]["jsonl"]["delivered"] >= N_VIDEO  # the other sink got everything
    finally:
        for conn in held:
            conn.close()
        hang.close()
        agent.stop()
    assert agent.counters()["state"] == "STOPPED"


def test_a_full_sink_queue_drops_oldest_without_blocking(tmp_path: Path) -> None:
    gate = threading.Event()

    class Stuck:
        name = "stuck"

        def write(self, record: dict[str, Any]) -> None:
            gate.wait(10)

        def close(self) -> None:
            pass

    w = SinkWorker(Stuck(), queue_size=3)
    w.start()
    for i in range(50):
        w.offer({"type": "verdict", "frame_id": i})  # returns at once although the sink is stuck
    assert w.dropped >= 46 and w.pending <= 3
    gate.set()
    assert w.wait_idle(5)
    assert w.delivered + w.dropped == 50
    w.close(1)
