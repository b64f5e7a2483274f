"""The local prediction API against a bare ``session.run`` on the same image, side by side in one run.

Arms, for 1 and for 4 concurrent clients, rounds alternating:

* ``bare``: in this process, per request: ``cv2.imdecode`` of the encoded image -> the model's own
  Preprocessor -> ``session.run`` (N threads for N clients). What any server must do per image.
* ``bare_run``: ``session.run`` alone on the already prepared input (no decoding, no preprocessing).
* ``api``: ``POST /predict`` of the same encoded image to :class:`edge_agent.http_api.PredictionApi`
  serving the same model in this process, from N client PROCESSES, each on one kept-alive
  ``http.client`` connection (so the clients do not compete with the server for this GIL).
* ``floor``: the same client processes against :class:`bench.api_floor.FloorServer`, a raw-socket
  server in this process that reads Content-Length by a byte search, runs the ``bare`` pipeline on
  the received body and writes a precomputed answer of the API's size: what the best possible server
  could do here, so ``api - floor`` is the API's own HTTP cost and ``floor - bare`` what the clients,
  the loopback and the CPU contention cost whatever the server.
* ``api_two_writes`` (1 client, ``--legacy-requests``): the same server answering as it did before
  the fix, headers and body in two writes with Nagle's algorithm on.

Per arm: requests/s, the p50/p99/mean latency of one request, and the CPU spent per request by this
process (the server) and by the client processes, and the share of the machine's cores busy during
the arm (this bench and any other load; from /proc/stat), the medians over rounds. The differences
and ratios between arms are computed from those medians, all measured in the same run, with the
bounds the CPU per request sets on these cores (requests/s; mean latency of N closed-loop clients). Check:
``api`` p50 is at most 1 ms above ``bare`` p50, for 1 and for 4 clients. The load average is
recorded: on a shared machine the absolute figures move, the side-by-side difference much less.

    python bench/bench_api.py [--requests 2000] [--rounds 5] [--image png|jpeg] [--size 96x128]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _client(address: tuple[str, int], body: bytes, n: int, warmup: int, out: Any, go: Any) -> None:
    """One kept-alive HTTP client: ``warmup`` then ``n`` timed POSTs; latencies (s) to ``out``."""
    conn = http.client.HTTPConnection(*address, timeout=30)
    headers = {"Content-Type": "application/octet-stream"}
    for _ in range(warmup):
        conn.request("POST", "/predict", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
    go.wait()
    lat = []
    c_start = time.process_time()
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/predict", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        lat.append(time.perf_counter() - t0)
        if r.status != 200:
            raise RuntimeError(f"API answered {r.status}")
    conn.close()
    out.put((lat, t_start, time.perf_counter(), time.process_time() - c_start))


def _summary(lat: list[float], wall: float) -> dict[str, float]:
    lat = sorted(lat)
    return {
        "requests_per_s": len(lat) / wall,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "mean_ms": 1000 * sum(lat) / len(lat),
    }


def _threads(work: Any, clients: int, n: int) -> dict[str, float]:
    """``work()`` ``n`` times on each of ``clients`` threads, timed like the HTTP clients (and the CPU
    this process spent per call)."""
    lats: list[list[float]] = [[] for _ in range(clients)]
    busy0 = _machine_cpu()
    go = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        go.wait()
        for _ in range(n):
            t0 = time.perf_counter()
            work()
            lats[i].append(time.perf_counter() - t0)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    go.wait()
    c0 = time.process_time()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    doc = _summary([x for lat in lats for x in lat], time.perf_counter() - t0)
    doc["server_cpu_ms_per_request"] = 1000 * (time.process_time() - c0) / (clients * n)
    doc["machine_busy_fraction"] = _busy(busy0, _machine_cpu())
    return doc


def _http(ctx: Any, address: tuple[str, int], body: bytes, clients: int, n: int) -> dict[str, float]:
    out = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_client, args=(address, body, n, 50, out, go)) for _ in range(clients)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # every client connected and warmed up (they wait on `go`)
    busy0 = _machine_cpu()
    c0 = time.process_time()
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    server_cpu = time.process_time() - c0
    busy1 = _machine_cpu()
    for p in procs:
        p.join(30)
    lat = [x for r in results for x in r[0]]
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    doc = _summary(lat, wall)
    doc["server_cpu_ms_per_request"] = 1000 * server_cpu / len(lat)
    doc["client_cpu_ms_per_request"] = 1000 * sum(r[3] for r in results) / len(lat)
    doc["machine_busy_fraction"] = _busy(busy0, busy1)
    return doc


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU ticks of the whole machine, every process included (Linux; zeros elsewhere)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _busy(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Share of all cores busy between two :func:`_machine_cpu` readings (this bench and any other load)."""
    total = b[1] - a[1]
    return (b[0] - a[0]) / total if total > 0 else float("nan")


def _two_writes_handler() -> Any:
    """The API's handler answering as before the fix: headers, then body, Nagle on."""
    from edge_agent.http_api import _Handler

    class TwoWrites(_Handler):
        disable_nagle_algorithm = False

        def _write(self, head: bytes, body: bytes) -> None:
            self.conn.send(head)
            self.conn.send(body)

    return TwoWrites


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rounds), 4) for k in rounds[0]}


def _compare(med: dict[str, dict[str, float]], clients: int) -> dict[str, Any]:
    """Differences (ms) and ratios between the arms' medians of one run."""
    api, floor, bare = med["api"], med["floor"], med["bare"]

    def diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {"value": round(a["p50_ms"] - b["p50_ms"], 4)}

    return {
        "api_over_bare_p50_ms": diff(api, bare),
        "api_over_bare_run_p50_ms": diff(api, med["bare_run"]),
        "api_over_floor_p50_ms": diff(api, floor),
        "floor_over_bare_p50_ms": diff(floor, bare),
        "ratios": {
            "api_p50_over_floor_p50": round(api["p50_ms"] / floor["p50_ms"], 3),
            "floor_p50_over_bare_p50": round(floor["p50_ms"] / bare["p50_ms"], 3),
            "api_requests_per_s_over_floor": round(api["requests_per_s"] / floor["requests_per_s"], 3),
            "api_server_cpu_over_floor": round(
                api["server_cpu_ms_per_request"] / floor["server_cpu_ms_per_request"], 3
            ),
        },
        # CPU per request of every part (ms): the server process, the client processes; the bound
        # it sets on requests/s (cores / CPU per request) and, for N closed-loop clients, on the mean
        # time of one request (N x CPU per request / cores: both cores doing nothing else)
        "cpu_ms_per_request": {arm: _cpu_bounds(med[arm], clients) for arm in ("floor", "api")},
    }


def _cpu_bounds(arm: dict[str, float], clients: int) -> dict[str, float]:
    cores = os.cpu_count() or 1
    total = arm["server_cpu_ms_per_request"] + arm["client_cpu_ms_per_request"]
    return {
        "server": arm["server_cpu_ms_per_request"],
        "clients": arm["client_cpu_ms_per_request"],
        "total": round(total, 4),
        "max_requests_per_s_on_these_cores": round(1000 * cores / total),
        "min_mean_latency_ms_on_these_cores": round(clients * total / cores, 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per client per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--image", choices=["png", "jpeg"], default="png")
    ap.add_argument("--size", default="96x128", help="HxW of the test image")
    ap.add_argument("--legacy-requests", type=int, default=100, help="requests per round, two-writes arm")
    args = ap.parse_args(argv)

    import cv2

    from bench.api_floor import FloorServer
    from bench.harness import emit
    from converters.keys import KeyPaths, init_keys, load_signing_key
    from edge_agent.http_api import PredictionApi
    from edge_agent.inference import load_and_check
    from edgeline.core.protocol.signing import TrustStore
    from firmware_configs.schema import ApiSection
    from tests.factories import tiny_frames, write_tiny_bundle

    h, w = (int(v) for v in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    init_keys(work / "keys")
    bundle = write_tiny_bundle(work / "bundle", load_signing_key(work / "keys"))
    model = load_and_check(bundle, TrustStore.load(KeyPaths(work / "keys").trust), threads=1)
    frame = cv2.resize(tiny_frames(1, seed=3)[0][0], (w, h), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".png" if args.image == "png" else ".jpg", frame)
    assert ok
    body = bytes(buf)
    import numpy as np

    pre, sess = model.preprocessor, model.session
    name_in, name_out = model.input_name, model.output_name
    prepared = pre(frame)[None, ...]

    def bare() -> None:
        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        sess.run([name_out], {name_in: pre(img)[None, ...]})

    def bare_run() -> None:
        sess.run([name_out], {name_in: prepared})

    class Host:
        device_id = "bench"
        current_model = model

        def counters(self) -> dict[str, Any]:
            return {}

    def bare_body(data: bytes) -> None:  # the floor server's work: `bare` on the bytes it received
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        sess.run([name_out], {name_in: pre(img)[None, ...]})

    section = ApiSection(enabled=True, port=0, max_body_bytes=max(1024, 4 * len(body)))
    api = PredictionApi(Host(), section)
    api.start()
    code, answer = api.predict(body)
    assert code == 200, answer
    floor = FloorServer(bare_body, json.dumps(answer, sort_keys=True).encode("utf-8"))
    floor.start()
    legacy = PredictionApi(Host(), section)
    legacy._server.RequestHandlerClass = _two_writes_handler()
    legacy.start()
    ctx = mp.get_context("spawn")
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    try:
        for clients in (1, 4):
            n = args.requests if clients == 1 else max(1, args.requests // 2)
            arms: dict[str, list[dict[str, float]]] = {"bare": [], "bare_run": [], "floor": [], "api": []}
            _threads(bare, clients, 100)  # warm-up
            for _ in range(args.rounds):
                arms["bare"].append(_threads(bare, clients, n))
                arms["bare_run"].append(_threads(bare_run, clients, n))
                arms["floor"].append(_http(ctx, floor.address, body, clients, n))
                arms["api"].append(_http(ctx, api.address, body, clients, n))
            if clients == 1 and args.legacy_requests > 0:
                arms["api_two_writes"] = [
                    _http(ctx, legacy.address, body, 1, args.legacy_requests) for _ in range(args.rounds)
                ]
            med: dict[str, Any] = {k: _median(v) for k, v in arms.items()}
            med.update(_compare(med, clients))
            results[f"clients_{clients}"] = med
    finally:
        api.stop()
        legacy.stop()
        floor.stop()
    results["image"] = {"format": args.image, "height": h, "width": w, "bytes": len(body)}
    results["requests_per_client_per_round"] = {"1": args.requests, "4": max(1, args.requests // 2)}
    results["rounds"] = args.rounds
    results["loadavg_before"] = [round(x, 2) for x in load_before]
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    checks = {
        f"api_p50_within_1ms_of_bare_{c}_clients": results[f"clients_{c}"]["api_over_bare_p50_ms"]["value"] <= 1.0
        for c in (1, 4)
    }
    # the machine's own limit, reported beside the goal: even the floor server is above 1 ms over bare
    results["floor_within_1ms_of_bare"] = {
        f"{c}_clients": results[f"clients_{c}"]["floor_over_bare_p50_ms"]["value"] <= 1.0 for c in (1, 4)
    }
    return emit("local_api", results, checks)


if __name__ == "__main__":
    raise SystemExit(main())
