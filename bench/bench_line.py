"""Trigger to result on the line's interfaces, against the bare inspection time of the same frames.

One agent in trigger mode in this process (the tiny signed bundle, ONNX Runtime, a looping in-memory
camera at ``--fps``, drop-oldest queue) serves three clients, each in its own process, each a real
client we did not write:

* ``modbus``: the pymodbus client as the PLC: writes the part id registers, sets the trigger coil
  (the trigger moment), polls the part id registers every 1 ms (a PLC cycle); available = the read that
  shows this part's result;
* ``opcua``: the asyncua client over Basic256Sha256 SignAndEncrypt with a user and password: calls
  ``Trigger(part id)`` (the trigger moment) and waits for this part's ``ResultReadyEventType`` event
  (subscription publishing interval 0: the server's fastest);
* ``tcp``: a raw socket: ``TRIGGER <part>`` out, the ``RESULT`` line in.

Arms: ``rate``: the three clients at ``--rate`` parts/s each (phases staggered), ``--triggers`` each;
``max``: each client alone, closed loop (the next trigger as soon as the result is seen), ``--max-
triggers`` each: the highest rate the agent sustains for that interface. Per trigger the agent's own
record gives the inspection time of the frame it took (``inspect_ms``, timed inside
``inspect_frame``) and the wait for that frame (``wait_ms``: in next-frame mode the trigger waits for
the camera's next frame, at most one frame interval); "over bare" is the client's latency minus that
trigger's own inspection time. ``bare`` is ``inspect_frame`` alone on the same frames in this process.

    python bench/bench_line.py [--triggers 2000] [--rate 10] [--max-triggers 2000] [--fps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit  # noqa: E402

NS = "urn:edgeline:line"
POLL_S = 0.001
#: a client gives a trigger up after this long (counted as not seen)
GIVE_UP_S = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _schedule(i: int, start: float, rate: float) -> None:
    if rate > 0:
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


# -- the clients (child processes) ----------------------------------------------------------------------
def modbus_client(port: int, base: int, n: int, rate: float, start: float, out: Any) -> None:
    from pymodbus.client import ModbusTcpClient

    from edge_agent.line import modbus_map as mm

    plc = ModbusTcpClient("127.0.0.1", port=port)
    assert plc.connect()
    rows = []
    for i in range(n):
        _schedule(i, start, rate)
        part = base + i
        plc.write_registers(mm.HR_PART_ID, mm.u32(part), device_id=1)
        t0 = time.monotonic()
        plc.write_coil(mm.COIL_TRIGGER, True, device_id=1)
        t1: float | None = None
        while time.monotonic() - t0 < GIVE_UP_S:
            r = plc.read_input_registers(mm.IR_PART_ID, count=2, device_id=1).registers
            if (r[0] << 16 | r[1]) == part:
                t1 = time.monotonic()
                break
            time.sleep(POLL_S)
        # None: the registers never showed this part (another client's result replaced it between two
        # polls: the map holds the last result only), counted as not seen
        rows.append((str(part), t0, t1))
    plc.close()
    out.put(("modbus", rows))


def opcua_client(url: str, tmp: str, base: int, n: int, rate: float, start: float, out: Any) -> None:
    from asyncua import Client, ua

    async def run() -> list[tuple[str, float, float | None]]:
        c = Client(url, timeout=10)
        c.application_uri = "urn:edgeline:bench:mes"
        await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{tmp}/client.pem,{tmp}/client-key.pem")
        c.set_user("mes")
        c.set_password("bench")
        seen: dict[str, float] = {}
        waiting: dict[str, asyncio.Event] = {}

        class Handler:
            def event_notification(self, event: Any) -> None:
                seen[event.PartId] = time.monotonic()
                ev = waiting.get(event.PartId)
                if ev is not None:
                    ev.set()

        rows = []
        async with c:
            idx = await c.get_namespace_index(NS)
            vs = c.get_node(f"ns={idx};s=VisionSystem")
            trigger = ua.NodeId.from_string(f"ns={idx};s=VisionSystem.Trigger")  # the stable NodeId: no browse per call
            etype = await c.nodes.base_event_type.get_child(f"{idx}:ResultReadyEventType")
            sub = await c.create_subscription(0, Handler())
            await sub.subscribe_events(vs, etype)
            for i in range(n):
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()) if rate > 0 else 0)
                part = f"U{base + i}"
                waiting[part] = asyncio.Event()
                t0 = time.monotonic()
                await vs.call_method(trigger, ua.Variant(part, ua.VariantType.String))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiting[part].wait(), GIVE_UP_S)
                rows.append((part, t0, seen.get(part)))
                del waiting[part]
        return rows

    out.put(("opcua", asyncio.run(run())))


def tcp_client(port: int, base: int, n: int, rate: float, start: float, out: Any) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    rows: list[tuple[str, float, float | None]] = []
    for i in range(n):
        _schedule(i, start, rate)
        part = f"T{base + i}"
        t0 = time.monotonic()
        s.sendall(f"TRIGGER {part}\n".encode())
        t1: float | None = None
        with contextlib.suppress(TimeoutError):
            while t1 is None:  # an answer that came after its client gave up is skipped
                if f.readline().decode().split()[1:2] == [part]:
                    t1 = time.monotonic()
        rows.append((part, t0, t1))
    s.close()
    out.put(("tcp", rows))


# -- the agent side ---------------------------------------------------------------------------------------
class Records:
    """A bus outlet keeping each triggered result's times by part id."""

    name = "bench-records"

    def __init__(self) -> None:
        self.by_part: dict[str, dict[str, Any]] = {}

    def write(self, record: dict[str, Any]) -> None:
        if record.get("part_id"):
            self.by_part[str(record["part_id"])] = {"state": record["state"], **record["times"]}

    def close(self) -> None:
        pass


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p99, mx = np.percentile(np.array(values), [50, 99, 100])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), "max_ms": round(float(mx), 3)}


def _summary(all_rows: list[tuple[str, float, float | None]], recs: Records, seconds: float) -> dict[str, Any]:
    rows = [(p, t0, t1) for p, t0, t1 in all_rows if t1 is not None]
    lat = [(t1 - t0) * 1000.0 for _, t0, t1 in rows]
    got = [recs.by_part.get(p, {}) for p, _, _ in rows]
    inspect = [g["inspect_ms"] for g in got if g.get("inspect_ms") is not None]
    wait = [g["wait_ms"] for g in got if g.get("wait_ms") is not None]
    over = [lt - g["inspect_ms"] for lt, g in zip(lat, got, strict=True) if g.get("inspect_ms") is not None]
    over_wait = [
        lt - g["inspect_ms"] - g["wait_ms"]
        for lt, g in zip(lat, got, strict=True)
        if g.get("inspect_ms") is not None and g.get("wait_ms") is not None
    ]
    states: dict[str, int] = {}
    for g in got:
        states[g.get("state", "none")] = states.get(g.get("state", "none"), 0) + 1
    return {
        "triggers": len(all_rows),
        #: triggers whose result this client never saw (Modbus: replaced by another client's result)
        "not_seen": len(all_rows) - len(rows),
        "rate_per_s": round(len(rows) / seconds, 1) if seconds > 0 else None,
        "trigger_to_result": _pct(lat),
        "inspect": _pct(inspect),
        "frame_wait": _pct(wait),
        "over_bare": _pct(over),
        "over_bare_and_frame_wait": _pct(over_wait),
        "states": states,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--triggers", type=int, default=2000, help="triggers per client in the rate arm")
    ap.add_argument("--rate", type=float, default=10.0, help="parts/s per client in the rate arm")
    ap.add_argument("--max-triggers", type=int, default=2000, help="triggers per client in the closed-loop arm")
    ap.add_argument("--fps", type=float, default=200.0, help="the camera's frame rate")
    args = ap.parse_args(argv)

    from converters.keys import KeyPaths, init_keys, load_signing_key
    from edge_agent.inference import inspect_frame, load_and_check
    from edge_agent.line.opcua_certs import make_certificate
    from edge_agent.line.opcua_users import hash_password
    from edge_agent.runtime import Agent, AgentState
    from edge_agent.sinks.base import SinkWorker
    from edge_agent.sources import MemoryCapture
    from edgeline.core.protocol.signing import TrustStore
    from firmware_configs.loader import parse_config
    from tests.factories import tiny_frames, write_tiny_bundle

    work = Path(tempfile.mkdtemp(prefix="bench-line-"))
    init_keys(work / "keys")
    bundle = write_tiny_bundle(work / "bundle", load_signing_key(work / "keys"))
    trust = KeyPaths(work / "keys").trust
    frames, _ = tiny_frames(16, seed=5)

    # bare: inspect_frame alone on the same frames, this process, before the agent starts
    model = load_and_check(bundle, TrustStore.load(trust), threads=1)
    bare = []
    for i in range(2000):
        t0 = time.perf_counter()
        inspect_frame(model, frames[i % len(frames)], i)
        bare.append((time.perf_counter() - t0) * 1000.0)

    (work / "users.txt").write_text(f"mes:{hash_password('bench', iterations=10_000)}\n")
    crt, key = make_certificate("urn:edgeline:bench:mes", "bench mes")
    (work / "client.pem").write_bytes(crt)
    (work / "client-key.pem").write_bytes(key)
    ports = {"modbus": _free_port(), "opcua": _free_port(), "tcp": _free_port()}
    cfg = parse_config(
        {
            "device": {"id": "bench-station"},
            "source": {
                "kind": "folder",
                "path": str(work),
                "loop": True,
                "max_fps": args.fps,
                "queue_policy": "drop_oldest",
                "mode": "trigger",
            },
            "model": {"bundle": str(bundle), "trust_file": str(trust)},
            "inference": {"stats_every": 0},
            "trigger": {"window_ms": 200, "budget_ms": 50, "max_pending": 64},
            "status": {"path": str(work / "status.json")},
            "cloud": {"enabled": False},
            "telemetry": {"enabled": False},
            "line": {
                "modbus": {"port": ports["modbus"]},
                "tcp": {"port": ports["tcp"]},
                "opcua": {"port": ports["opcua"], "users_file": str(work / "users.txt"), "pki_dir": str(work / "pki")},
            },
        },
        "bench",
    )
    agent = Agent(cfg, capture=MemoryCapture(frames, "belt"), write_status=False)
    recs = Records()
    worker = SinkWorker(recs, queue_size=100_000, events=False)
    worker.start()
    agent.bus.add(worker)
    agent.start()
    while not (agent.state is AgentState.RUNNING and agent.reader.frames_read > 0):
        time.sleep(0.05)
    url = f"opc.tcp://127.0.0.1:{ports['opcua']}/edgeline/"
    ctx = mp.get_context("spawn")
    load0 = os.getloadavg()

    def arm(clients: list[str], n: int, rate: float, base: int) -> dict[str, Any]:
        out = ctx.Queue()
        start = time.monotonic() + 3.0  # the spawned processes import and connect meanwhile
        procs = []
        for k, name in enumerate(clients):
            offset = start + (k / (len(clients) * rate) if rate > 0 else 0.0)
            if name == "modbus":
                a: tuple[Any, ...] = (ports["modbus"], base, n, rate, offset, out)
                target: Any = modbus_client
            elif name == "opcua":
                a, target = (url, str(work), base, n, rate, offset, out), opcua_client
            else:
                a, target = (ports["tcp"], base, n, rate, offset, out), tcp_client
            procs.append(ctx.Process(target=target, args=a, daemon=True))
        for p in procs:
            p.start()
        got = dict(out.get(timeout=max(120.0, 4 * n / (rate or 50))) for _ in procs)
        for p in procs:
            p.join(10)
        worker.wait_idle(5.0)
        res = {}
        for name, rows in got.items():
            ends = [t1 for _, _, t1 in rows if t1 is not None]
            seconds = max(ends) - rows[0][1] if ends else 0.0
            res[name] = _summary(rows, recs, seconds)
        return res

    results: dict[str, Any] = {
        "bare_inspect_frame": _pct(bare),
        "camera_fps": args.fps,
        "rate_arm": {
            "per_client_parts_per_s": args.rate,
            **arm(["modbus", "opcua", "tcp"], args.triggers, args.rate, 10_000),
        },
        "max_arm": {},
    }
    for k, name in enumerate(("modbus", "opcua", "tcp")):
        results["max_arm"].update(arm([name], args.max_triggers, 0.0, 1_000_000 * (k + 2)))
    results["loadavg_before_after"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    results["agent_line_counters"] = agent.counters()["line"]
    agent.stop()
    worker.close(1.0)
    checks = {
        f"{name}_p99_over_bare_le_15ms": results["rate_arm"][name]["over_bare"].get("p99_ms", 1e9) <= 15.0
        for name in ("modbus", "opcua")
    }
    checks["every_trigger_answered_ok"] = all(
        set(results[a][n]["states"]) == {"ok"} for a in ("rate_arm", "max_arm") for n in ("modbus", "opcua", "tcp")
    )
    return emit("line", results, checks)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
