"""The TCP line protocol with a raw socket and Modbus TCP with the pymodbus client acting as the PLC,
against a real agent in trigger mode; bad clients that do not affect the others."""

from __future__ import annotations

import socket
import time
from typing import Any

from pymodbus.client import ModbusTcpClient

from edge_agent.line import modbus_map as mm
from tests.agent.helpers import read_jsonl, wait_for
from tests.line.conftest import MakeAgent, free_port


def _lines(sock: socket.socket, n: int, timeout: float = 5.0) -> list[str]:
    sock.settimeout(timeout)
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {buf!r}"
        buf += chunk
    return buf.decode().splitlines()


def test_tcp_line_triggers_give_one_result_each_with_the_part_id(make_agent: MakeAgent, tmp_path: Any) -> None:
    port = free_port()
    agent = make_agent({"tcp": {"port": port}})
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"PING\n")
        assert _lines(s, 1) == ["PONG"]
        s.sendall(b"".join(f"TRIGGER P-{i}\n".encode() for i in range(20)))
        answers = _lines(s, 20)
        s.sendall(b"TRIGGER\nHELLO\nTRIGGER x notatime\nTRIGGER y nan\nTRIGGER z -inf\n")
        extra = _lines(s, 5)
    parts = [a.split()[1] for a in answers]
    assert sorted(parts) == sorted(f"P-{i}" for i in range(20))
    for a in answers:
        kind, _part, result_id, state, verdict, label, conf, total = a.split()
        assert kind == "RESULT" and result_id.startswith("dev-1-") and state == "ok"
        assert verdict in ("ok", "defect") and label != "-" and 0 <= float(conf) <= 1 and float(total) > 0
    assert sum(e.startswith("ERROR") for e in extra) == 4
    assigned = next(e for e in extra if e.startswith("RESULT"))
    assert assigned.split()[1].startswith("part-")
    # the same results went to the sinks, with the same fields
    assert agent.sinks[0].wait_idle(5.0)
    recs = [r for r in read_jsonl(tmp_path / "verdicts.jsonl") if r.get("origin") == "tcp"]
    assert len(recs) == 21 and len({r["result_id"] for r in recs}) == 21
    line = agent.counters()["line"]
    assert line["triggers"]["tcp"] == 21 and line["results"]["ok"] == 21 and line["missed"] == 0


def test_a_missed_trigger_is_reported_with_its_state(make_agent: MakeAgent) -> None:
    port = free_port()
    agent = make_agent({"tcp": {"port": port}}, trigger={"window_ms": 30})
    with socket.create_connection(("127.0.0.1", port)) as s:
        # a trigger whose time lies 10 s in the past: no buffered frame is that old
        s.sendall(f"TRIGGER OLD-1 {time.time() - 10:.3f}\n".encode())
        (answer,) = _lines(s, 1)
    assert answer.split()[1:2] == ["OLD-1"] and answer.split()[3] == "missed"
    assert agent.counters()["line"]["missed"] == 1


def test_a_tcp_client_that_never_reads_is_dropped_and_others_still_get_results(make_agent: MakeAgent) -> None:
    port = free_port()
    agent = make_agent({"tcp": {"port": port}}, trigger={"window_ms": 200, "max_pending": 10_000})
    mute = socket.create_connection(("127.0.0.1", port))
    mute.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        mute.sendall(b"HELLO\n" * 40_000)  # error answers pile up unread: 2 MB
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"TRIGGER GOOD-1\n")
            (answer,) = _lines(s, 1)
        assert answer.startswith("RESULT GOOD-1 ")
        assert wait_for(lambda: agent.line.by_name("line-tcp").clients_dropped >= 1, 5.0), agent.counters()["line"]
    finally:
        mute.close()


def test_modbus_plc_triggers_and_reads_the_result(make_agent: MakeAgent) -> None:
    port = free_port()
    agent = make_agent({"modbus": {"port": port, "unit_id": 1}})
    plc = ModbusTcpClient("127.0.0.1", port=port)
    assert plc.connect()
    try:
        ir = plc.read_input_registers(0, count=mm.IR_COUNT, device_id=1)
        assert not ir.isError() and ir.registers[mm.IR_MAP_VERSION] == mm.MAP_VERSION
        assert ir.registers[mm.IR_STATUS] == mm.STATUS_CODES["RUNNING"]
        seen: list[list[int]] = []
        for part in (1001, 1002, 70000):
            count = _count(plc)
            assert not plc.write_registers(mm.HR_PART_ID, mm.u32(part), device_id=1).isError()
            assert not plc.write_coil(mm.COIL_TRIGGER, True, device_id=1).isError()
            assert wait_for(lambda c=count: _count(plc) > c, 5.0)  # type: ignore[misc]
            regs = plc.read_input_registers(0, count=mm.IR_COUNT, device_id=1).registers
            seen.append(regs)
            assert (regs[mm.IR_PART_ID] << 16 | regs[mm.IR_PART_ID + 1]) == part
            assert regs[mm.IR_VERDICT] in (1, 2) and regs[mm.IR_STATE] == 1
            assert 0 <= regs[mm.IR_CONFIDENCE] <= mm.CONFIDENCE_SCALE and regs[mm.IR_CLASS] in (0, 1)
            assert regs[mm.IR_MODEL_VERSION] == 1 and regs[mm.IR_TOTAL_TIME] > 0
            text = b"".join(r.to_bytes(2, "big") for r in regs[mm.IR_PART_TEXT : mm.IR_PART_TEXT + 16])
            assert text.rstrip(b"\0") == str(part).encode()
            # the coil reads 0 again: ready for the next part
            assert plc.read_coils(mm.COIL_TRIGGER, count=1, device_id=1).bits[0] is False
            # the mirror in holding registers holds the same result
            hr = plc.read_holding_registers(mm.HR_MIRROR, count=mm.IR_COUNT, device_id=1).registers
            assert hr[mm.IR_PART_ID : mm.IR_PART_TEXT + 16] == regs[mm.IR_PART_ID : mm.IR_PART_TEXT + 16]
        assert [r[mm.IR_RESULT_COUNT + 1] for r in seen] == [1, 2, 3]
        hb = plc.read_input_registers(mm.IR_HEARTBEAT, count=1, device_id=1).registers[0]
        time.sleep(1.1)
        assert plc.read_input_registers(mm.IR_HEARTBEAT, count=1, device_id=1).registers[0] != hb
        assert agent.counters()["line"]["triggers"]["modbus"] == 3
    finally:
        plc.close()


def _count(plc: ModbusTcpClient) -> int:
    r = plc.read_input_registers(mm.IR_RESULT_COUNT, count=2, device_id=1).registers
    return int(r[0] << 16 | r[1])


def test_bad_modbus_requests_get_exceptions_and_do_not_disturb_the_plc(make_agent: MakeAgent) -> None:
    port = free_port()
    agent = make_agent({"modbus": {"port": port}})
    plc = ModbusTcpClient("127.0.0.1", port=port)
    assert plc.connect()
    try:
        # a write to the read-only mirror, a read beyond the map: exception responses
        assert plc.write_register(mm.HR_MIRROR + mm.IR_VERDICT, 7, device_id=1).isError()
        assert plc.read_input_registers(500, count=4, device_id=1).isError()
        # raw garbage and a truncated frame on another connection
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"\x00\x01\x00\x00\x00\xff\x01\x03\x00")  # a length the frame does not have
            raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
            time.sleep(0.2)
        # a client that connects and never reads anything
        idle = socket.create_connection(("127.0.0.1", port))
        try:
            count = _count(plc)
            plc.write_registers(mm.HR_PART_ID, mm.u32(42), device_id=1)
            plc.write_coil(mm.COIL_TRIGGER, True, device_id=1)
            assert wait_for(lambda: _count(plc) > count, 5.0)
            regs = plc.read_input_registers(0, count=mm.IR_COUNT, device_id=1).registers
            assert (regs[mm.IR_PART_ID] << 16 | regs[mm.IR_PART_ID + 1]) == 42 and regs[mm.IR_STATE] == 1
            assert plc.read_holding_registers(mm.HR_MIRROR + mm.IR_VERDICT, count=1, device_id=1).registers[0] in (1, 2)
        finally:
            idle.close()
        assert agent.counters()["line"]["results"]["ok"] == 1
    finally:
        plc.close()
