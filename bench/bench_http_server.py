"""Which HTTP server for the device's local API: the project's stdlib server against a maintained ASGI
server (uvicorn, with Starlette routing), serving the same ``/predict`` work, side by side in one run.

Arms, for 1 and 4 client processes on kept-alive ``http.client`` connections (the clients of
``bench_api.py``), rounds alternating:

* ``stdlib``: :class:`edge_agent.http_api.PredictionApi` (socketserver, one thread per connection,
  the framing of :mod:`edge_agent.http_wire`).
* ``asgi``: uvicorn (its default pure-Python h11 protocol, as ``pip install uvicorn`` gives; the
  ``httptools`` C parser is measured too when it is installed) running a Starlette app whose
  ``POST /predict`` calls the same :meth:`PredictionApi.predict` (decode, preprocess, run, decide)
  in Starlette's thread pool, as a blocking handler must be run under asyncio.
* ``bare``: decode + preprocess + ``session.run`` in this process, no HTTP: the floor both stand on.

Per arm: requests/s, p50/p99 latency and the server's CPU per request (this process), medians over
rounds; the differences ``asgi - stdlib`` are the figure the choice rests on.

    python bench/bench_http_server.py [--requests 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_api import _http, _median, _threads  # noqa: E402


class AsgiServer:
    """uvicorn in a thread of this process, on a free loopback port."""

    def __init__(self, app: Any, http: str) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.address = sock.getsockname()
        sock.close()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.address[1], http=http, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def starlette_app(predict: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    encoder = json.JSONEncoder(sort_keys=True, default=str)

    async def handle(request: Request) -> Response:
        body = await request.body()
        code, answer = await run_in_threadpool(predict, body)
        return Response(encoder.encode(answer).encode("utf-8"), status_code=code, media_type="application/json")

    return Starlette(routes=[Route("/predict", handle, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000, help="requests per client per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)

    import cv2
    import numpy as np

    from bench.harness import emit
    from converters.keys import KeyPaths, init_keys, load_signing_key
    from edge_agent.http_api import PredictionApi
    from edge_agent.inference import load_and_check
    from edgeline.core.protocol.signing import TrustStore
    from firmware_configs.schema import ApiSection
    from tests.factories import tiny_frames, write_tiny_bundle

    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    init_keys(work / "keys")
    bundle = write_tiny_bundle(work / "bundle", load_signing_key(work / "keys"))
    model = load_and_check(bundle, TrustStore.load(KeyPaths(work / "keys").trust), threads=1)
    frame = cv2.resize(tiny_frames(1, seed=3)[0][0], (128, 96), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".png", frame)
    assert ok
    body = bytes(buf)
    pre, sess = model.preprocessor, model.session

    def bare() -> None:
        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        sess.run([model.output_name], {model.input_name: pre(img)[None, ...]})

    class Host:
        device_id = "bench"
        current_model = model

        def counters(self) -> dict[str, Any]:
            return {}

    api = PredictionApi(Host(), ApiSection(enabled=True, port=0, max_body_bytes=max(1024, 4 * len(body))))
    api.start()
    code, _ = api.predict(body)
    assert code == 200
    servers: dict[str, Any] = {"stdlib": api}
    try:
        import httptools  # noqa: F401

        kinds = ["h11", "httptools"]
    except ImportError:
        kinds = ["h11"]
    for kind in kinds:
        srv = AsgiServer(starlette_app(api.predict), kind)
        srv.start()
        servers[f"asgi_{kind}"] = srv
    ctx = mp.get_context("spawn")
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    try:
        for clients in (1, 4):
            n = args.requests if clients == 1 else max(1, args.requests // 2)
            arms: dict[str, list[dict[str, float]]] = {"bare": [], **{k: [] for k in servers}}
            for _ in range(args.rounds):
                arms["bare"].append(_threads(bare, clients, n))
                for name, srv in servers.items():
                    arms[name].append(_http(ctx, tuple(srv.address), body, clients, n))
            med: dict[str, Any] = {k: _median(v) for k, v in arms.items()}
            for name in servers:
                if name != "stdlib":
                    med[f"{name}_minus_stdlib_p50_ms"] = round(med[name]["p50_ms"] - med["stdlib"]["p50_ms"], 4)
                    med[f"{name}_over_stdlib_requests_per_s"] = round(
                        med[name]["requests_per_s"] / med["stdlib"]["requests_per_s"], 3
                    )
            results[f"clients_{clients}"] = med
    finally:
        for srv in servers.values():
            srv.stop()
    results["requests_per_client_per_round"] = {"1": args.requests, "4": max(1, args.requests // 2)}
    results["rounds"] = args.rounds
    results["loadavg_before"] = [round(x, 2) for x in load_before]
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return emit("http_server_choice", results)


if __name__ == "__main__":
    raise SystemExit(main())
