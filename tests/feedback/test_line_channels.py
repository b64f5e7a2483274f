"""Feedback through the line's interfaces against a real agent in trigger mode: the TCP line with a raw
socket, Modbus TCP with the pymodbus client as the PLC (register map v2), OPC UA with the asyncua
client. Each stores once, counts a replacement, refuses unknown ids and bad truths, and carries on."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from asyncua import Client, ua
from pymodbus.client import ModbusTcpClient

from edge_agent.line import modbus_map as mm
from edge_agent.line.opcua_certs import make_certificate
from edge_agent.line.opcua_users import hash_password
from tests.agent.helpers import wait_for
from tests.feedback.conftest import FeedbackAgent, triggered
from tests.line.conftest import free_port


def _lines(sock: socket.socket, n: int) -> list[str]:
    sock.settimeout(10.0)
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {buf!r}"
        buf += chunk
    return buf.decode().splitlines()


def test_tcp_line_feedback(feedback_agent: FeedbackAgent) -> None:
    port = free_port()
    agent = feedback_agent({"tcp": {"port": port}})
    r = triggered(agent, "T-1")
    other = "ok" if r["verdict"] == "defect" else "defect"
    rid = r["result_id"]
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"FEEDBACK {rid} confirm\nFEEDBACK {rid} {other}\n".encode())
        assert _lines(s, 2) == [f"FEEDBACK {rid} {r['verdict']} stored 0", f"FEEDBACK {rid} {other} replaced 1"]
        s.sendall(
            b"FEEDBACK dev-1-0-424242 ok\n"
            + f"FEEDBACK {rid} unknown\nFEEDBACK {rid}\nFEEDBACK {rid} ok extra\nFEEDBACK {rid} <b>\n".encode()
            + b"FEEDBACK \xff\xfe ok\nPING\n"
        )
        answers = _lines(s, 7)
        assert [a.split()[:2] for a in answers[:6]] == [
            ["ERROR", "unknown_result"],
            ["ERROR", "bad_truth"],
            ["ERROR", "bad_request"],
            ["ERROR", "bad_request"],
            ["ERROR", "bad_truth"],
            ["ERROR", "bad_request"],
        ]
        assert answers[6] == "PONG"  # the line carries on
        s.sendall(b"TRIGGER T-2\n")
        assert _lines(s, 1)[0].startswith("RESULT T-2 ")
    rows = agent.feedback.store.feedback_rows()
    assert [(x["result_id"], x["truth"], x["source"], x["replaced"]) for x in rows] == [(rid, other, "tcp", 1)]
    refused = agent.counters()["line"]["feedback"]["refused"]
    assert sum(refused.values()) == 6 and all(k.startswith("tcp.") for k in refused)


def _wait_counter(plc: ModbusTcpClient, before: int) -> list[int]:
    """Input registers once the feedback counter (IR 38-39) moved past ``before``."""
    regs: list[int] = []

    def moved() -> bool:
        regs[:] = plc.read_input_registers(0, count=mm.IR_COUNT, device_id=1).registers
        return (regs[mm.IR_FEEDBACK_COUNT] << 16 | regs[mm.IR_FEEDBACK_COUNT + 1]) > before

    assert wait_for(moved, 5.0)
    return regs


def test_modbus_feedback_map_v2(feedback_agent: FeedbackAgent) -> None:
    # version 1's addresses are where they were
    assert (mm.IR_RESULT_COUNT, mm.IR_VERDICT, mm.IR_PART_ID, mm.IR_PART_TEXT, mm.HR_PART_ID) == (3, 5, 10, 21, 0)
    assert (mm.HR_MIRROR, mm.COIL_TRIGGER, mm.DI_READY, mm.MAP_VERSION) == (100, 0, 0, 2)
    port = free_port()
    agent = feedback_agent({"modbus": {"port": port}})
    plc = ModbusTcpClient("127.0.0.1", port=port)
    assert plc.connect()
    try:
        regs = plc.read_input_registers(0, count=mm.IR_COUNT, device_id=1).registers
        assert regs[mm.IR_MAP_VERSION] == 2 and regs[mm.IR_FEEDBACK_STATUS] == 0
        results = []
        for part in (501, 502):
            plc.write_registers(mm.HR_PART_ID, mm.u32(part), device_id=1)
            plc.write_coil(mm.COIL_TRIGGER, True, device_id=1)
            assert wait_for(lambda p=part: any(r["part_id"] == str(p) for r in agent.feedback.store.recent(5)), 10.0)
            results.append(next(r for r in agent.feedback.store.recent(5) if r["part_id"] == str(part)))
        assert wait_for(lambda: agent.line.by_name("line-modbus")._results, 5.0)
        count = 0

        def give(truth: int, counter: int) -> int:
            nonlocal count
            plc.write_registers(mm.HR_FEEDBACK_TRUTH, [truth, *mm.u32(counter)], device_id=1)
            plc.write_coil(mm.COIL_FEEDBACK, True, device_id=1)
            regs = _wait_counter(plc, count)
            count += 1
            assert not plc.read_coils(mm.COIL_FEEDBACK, count=1, device_id=1).bits[0]  # reads 0 again
            return regs[mm.IR_FEEDBACK_STATUS]

        assert give(0, 0) == mm.FEEDBACK_STATUS["stored"]  # confirm the last result (part 502)
        assert give(2, 0) == mm.FEEDBACK_STATUS["replaced"]  # override it as defect
        counter_501 = int(results[0]["result_id"].rsplit("-", 1)[1])
        assert give(1, counter_501) == mm.FEEDBACK_STATUS["stored"]  # part 501 named by its result counter
        assert give(1, 99_999) == mm.FEEDBACK_STATUS["unknown_result"]
        assert give(9, 0) == mm.FEEDBACK_STATUS["bad_truth"]
        # the trigger still works beside it
        plc.write_registers(mm.HR_PART_ID, mm.u32(503), device_id=1)
        plc.write_coil(mm.COIL_TRIGGER, True, device_id=1)
        assert wait_for(lambda: any(r["part_id"] == "503" for r in agent.feedback.store.recent(5)), 10.0)
        # the feedback registers are mirrored read-only with the rest
        hr = plc.read_holding_registers(mm.HR_MIRROR, count=mm.IR_COUNT, device_id=1).registers
        assert hr[mm.IR_FEEDBACK_STATUS] == mm.FEEDBACK_STATUS["bad_truth"] and hr[mm.IR_FEEDBACK_COUNT + 1] == 5
    finally:
        plc.close()
    rows = {x["part_id"]: x for x in agent.feedback.store.feedback_rows()}
    assert set(rows) == {"501", "502"}
    assert (rows["502"]["truth"], rows["502"]["replaced"], rows["502"]["source"]) == ("defect", 1, "modbus")
    assert rows["501"]["truth"] == "ok"
    fb = agent.counters()["line"]["feedback"]
    assert fb["accepted"] == {"modbus": 3} and fb["refused"] == {"modbus.unknown_result": 1, "modbus.bad_truth": 1}


def test_opcua_feedback_method(feedback_agent: FeedbackAgent, tmp_path: Path) -> None:
    port = free_port()
    users = tmp_path / "users.txt"
    users.write_text(f"mes:{hash_password('s3cret', iterations=1000)}\n")
    agent = feedback_agent({"opcua": {"port": port, "users_file": str(users), "pki_dir": str(tmp_path / "pki")}})
    crt, key = make_certificate("urn:edgeline:test:mes", "test mes")
    (tmp_path / "client.pem").write_bytes(crt)
    (tmp_path / "client-key.pem").write_bytes(key)
    r = triggered(agent, "U-1")
    missed = triggered(agent, "U-OLD", ts=time.time() - 30)

    async def run() -> None:
        c = Client(f"opc.tcp://127.0.0.1:{port}/edgeline/", timeout=5)
        c.application_uri = "urn:edgeline:test:mes"
        await c.set_security_string(
            f"Basic256Sha256,SignAndEncrypt,{tmp_path / 'client.pem'},{tmp_path / 'client-key.pem'}"
        )
        c.set_user("mes")
        c.set_password("s3cret")
        async with c:
            idx = await c.get_namespace_index("urn:edgeline:line")
            vs = await c.nodes.objects.get_child(f"{idx}:VisionSystem")
            string = ua.VariantType.String

            async def call(rid: str, truth: str) -> list[object]:
                out = await vs.call_method(f"{idx}:Feedback", ua.Variant(rid, string), ua.Variant(truth, string))
                return list(out)

            assert await call(r["result_id"], "confirm") == [r["verdict"], 0]
            assert await call(r["result_id"], "defect") == ["defect", 1]
            for rid, truth, code in (
                ("dev-1-0-777", "ok", ua.StatusCodes.BadNotFound),
                (r["result_id"], "unknown", ua.StatusCodes.BadInvalidArgument),
                ("", "ok", ua.StatusCodes.BadInvalidArgument),
                (missed["result_id"], "ok", ua.StatusCodes.BadInvalidState),
            ):
                with pytest.raises(ua.UaStatusCodeError) as err:
                    await call(rid, truth)
                assert err.value.code == code
            # the server carries on: a trigger and another feedback
            out = await vs.call_method(f"{idx}:Trigger", ua.Variant("U-2", string))
            assert out[1] == "U-2"

    asyncio.run(run())
    rows = agent.feedback.store.feedback_rows()
    assert [(x["result_id"], x["truth"], x["replaced"], x["source"]) for x in rows] == [
        (r["result_id"], "defect", 1, "opcua")
    ]
    assert agent.counters()["line"]["interfaces"]["line-opcua"]["feedback"] == 2
