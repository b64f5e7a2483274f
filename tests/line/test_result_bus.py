"""One result path: every triggered result reaches the sinks and every line interface with the same
fields; a hung interface only fills its own bounded queue (drops counted) and never holds up
inspection or the other interfaces; late results are published with their state and counted."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from edge_agent.sinks.base import SinkWorker
from edge_agent.status import prometheus_text
from tests.agent.helpers import read_jsonl, wait_for
from tests.line.conftest import MakeAgent, free_port
from tests.line.test_tcp_and_modbus import _lines


class HungInterface:
    name = "hung"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.got: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.got.append(record)
        self.release.wait(30)

    def close(self) -> None:
        pass


def test_a_hung_interface_does_not_hold_up_the_others(make_agent: MakeAgent, tmp_path: Path) -> None:
    port = free_port()
    agent = make_agent({"tcp": {"port": port}})
    hung = HungInterface()
    worker = SinkWorker(hung, queue_size=4, events=False)
    worker.start()
    agent.bus.add(worker)
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"".join(f"TRIGGER H-{i}\n".encode() for i in range(30)))
            answers = _lines(s, 30)
        assert len(answers) == 30 and all(a.split()[3] == "ok" for a in answers)
        # every result offered to the hung outlet (the TCP client may read its last answers before the
        # bus has offered those results to it); it is stuck in its first write, its queue stays bounded
        # (four), and what did not fit was dropped and counted, not waited for
        assert wait_for(lambda: worker.stats()["offered"] == 30 and len(hung.got) == 1, 5.0), worker.stats()
        st = worker.stats()
        assert st["delivered"] == 0 and st["pending"] <= 4, st
        in_hand = 30 - st["pending"] - st["dropped"]  # the batch the worker took before it hung
        assert 1 <= in_hand <= SinkWorker.BATCH, st
        assert agent.sinks[0].wait_idle(5.0)
        recs = [r for r in read_jsonl(tmp_path / "verdicts.jsonl") if r.get("origin") == "tcp"]
        assert len(recs) == 30
        # the same fields everywhere: what the hung interface got is what the JSONL sink wrote
        first = hung.got[0]
        assert first == next(r for r in recs if r["result_id"] == first["result_id"])
    finally:
        hung.release.set()
        worker.close(1.0)


def test_late_results_are_published_with_their_state_and_counted(make_agent: MakeAgent) -> None:
    port = free_port()
    agent = make_agent({"tcp": {"port": port}}, trigger={"window_ms": 200, "budget_ms": 0.001})
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"TRIGGER L-1\nTRIGGER L-2\n")
        answers = _lines(s, 2)
    assert {a.split()[3] for a in answers} == {"late"}
    counters = agent.counters()
    assert counters["line"]["late"] == 2 and counters["line"]["results"] == {"late": 2}
    text = prometheus_text(counters)
    assert 'edgeline_trigger_results_total{device="dev-1",state="late"} 2' in text
    assert 'edgeline_trigger_results_total{device="dev-1",state="missed"} 0' in text
    assert 'edgeline_triggers_total{device="dev-1",origin="tcp"} 2' in text
    assert 'edgeline_line_dropped_total{device="dev-1",interface="line-tcp"} 0' in text
