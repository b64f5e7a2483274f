"""The Open Inference Protocol's ``infer`` against ``POST /predict`` and a bare ``session.run`` on the
same frames, side by side in one run (the structure and helpers of ``bench/bench_api.py``).

Arms, for 1 and for 4 concurrent clients, rounds alternating, every arm cycling over the same frames:

* ``bare_run``: ``session.run`` alone on the already prepared inputs, in this process (N threads);
* ``bare``: ``cv2.imdecode`` of the encoded frame -> the model's Preprocessor -> ``session.run``;
* ``predict``: ``POST /predict`` of the encoded frame to :class:`edge_agent.http_api.PredictionApi`
  serving the same model in this process, from N client PROCESSES on kept-alive ``http.client``
  connections (as ``bench_api``'s ``api`` arm);
* ``oip_image``: ``infer`` with the frame as a BYTES input from the standard ``tritonclient.http``
  client with its defaults (binary input and outputs), one client per process, the verdict read back;
* ``oip_image_raw``: the same ``infer`` request bytes (built once by tritonclient's own encoder) sent
  by ``http.client``: the server side of ``oip_image`` without tritonclient's client cost;
* ``oip_tensor``: ``infer`` with the prepared FP32 input from ``tritonclient.http`` (no decoding or
  preprocessing on the server: compare with ``bare_run``).

Per arm: requests/s, p50/p99/mean latency, CPU per request of the server process and of the client
processes, the share of the machine's cores busy (medians over rounds); the differences between arms
from those medians. Every ``infer`` answer is checked against ``/predict``'s verdict on the same frame
before timing.

    python bench/bench_oip.py [--requests 1000] [--rounds 5] [--frames 8]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_api import _busy, _cpu_bounds, _machine_cpu, _median, _summary, _threads  # noqa: E402

INFER = "/v2/models/{}/infer"


def _raw_client(address: tuple[str, int], path: str, bodies: list[tuple[bytes, dict[str, str]]]) -> Any:
    conn = http.client.HTTPConnection(*address, timeout=30)
    state = {"i": 0}

    def call() -> None:
        body, headers = bodies[state["i"] % len(bodies)]
        state["i"] += 1
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{path} answered {r.status}")

    return call, conn.close


def _triton_client(address: tuple[str, int], model: str, inputs: list[Any]) -> Any:
    import tritonclient.http as th

    client = th.InferenceServerClient(f"{address[0]}:{address[1]}", network_timeout=30)
    state = {"i": 0}

    def call() -> None:
        i = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        if client.infer(model, [i]).as_numpy("verdict") is None:
            raise RuntimeError("no verdict in the answer")

    return call, client.close


def _triton_inputs(kind: str, payload: list[Any], input_name: str) -> list[Any]:
    import numpy as np
    import tritonclient.http as th

    out = []
    for p in payload:
        if kind == "image":
            i = th.InferInput("IMAGE", [1], "BYTES")
            i.set_data_from_numpy(np.array([p], dtype=object))
        else:
            i = th.InferInput(input_name, [1, *p.shape], "FP32")
            i.set_data_from_numpy(p[None, ...])
        out.append(i)
    return out


def _client(address: tuple[str, int], arm: str, spec: dict[str, Any], n: int, out: Any, go: Any) -> None:
    """One client process: 50 warm-up then ``n`` timed requests; latencies (s) and CPU to ``out``."""
    if arm == "predict":
        call, close = _raw_client(address, "/predict", [(b, {}) for b in spec["pngs"]])
    elif arm == "oip_image_raw":
        call, close = _raw_client(address, INFER.format(spec["model"]), spec["raw_bodies"])
    else:
        kind = "image" if arm == "oip_image" else "tensor"
        payload = spec["pngs"] if kind == "image" else spec["tensors"]
        call, close = _triton_client(address, spec["model"], _triton_inputs(kind, payload, spec["input_name"]))
    for _ in range(50):
        call()
    go.wait()
    lat = []
    c_start = time.process_time()
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        lat.append(time.perf_counter() - t0)
    close()
    out.put((lat, t_start, time.perf_counter(), time.process_time() - c_start))


def _http(ctx: Any, address: tuple[str, int], arm: str, spec: dict[str, Any], clients: int, n: int) -> dict[str, float]:
    out = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_client, args=(address, arm, spec, n, out, go)) for _ in range(clients)]
    for p in procs:
        p.start()
    time.sleep(1.5)  # every client imported, connected and warmed up (they wait on `go`)
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


def _raw_infer_body(png: bytes) -> tuple[bytes, dict[str, str]]:
    """tritonclient's own encoding of the default ``infer`` request for one image."""
    import numpy as np
    import tritonclient.http as th

    i = th.InferInput("IMAGE", [1], "BYTES")
    i.set_data_from_numpy(np.array([png], dtype=object))
    body, json_size = th.InferenceServerClient.generate_request_body([i])
    return body, {"Inference-Header-Content-Length": str(json_size)}


def _check_same_verdicts(api: Any, spec: dict[str, Any]) -> None:
    """Each frame's ``infer`` answers (image and tensor) give ``/predict``'s verdict and confidence."""
    import numpy as np
    import tritonclient.http as th

    c = th.InferenceServerClient("{}:{}".format(*api.address))
    images = _triton_inputs("image", spec["pngs"], spec["input_name"])
    tensors = _triton_inputs("tensor", spec["tensors"], spec["input_name"])
    for png, img_in, t_in in zip(spec["pngs"], images, tensors, strict=True):
        code, rec = api.predict(png)
        assert code == 200, rec
        for res in (c.infer(spec["model"], [img_in]), c.infer(spec["model"], [t_in])):
            assert res.as_numpy("verdict")[0].decode() == rec["verdict"]
            assert np.isclose(float(res.as_numpy("confidence")[0]), rec["confidence"], rtol=0, atol=1e-6)
    c.close()


def _diff(a: dict[str, float], b: dict[str, float]) -> float:
    return round(a["p50_ms"] - b["p50_ms"], 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000, help="requests per client per round (half with 4)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=8, help="distinct frames every arm cycles over")
    args = ap.parse_args(argv)

    import cv2
    import numpy as np

    from bench.harness import emit
    from converters.keys import KeyPaths, init_keys, load_signing_key
    from edge_agent.http_api import PredictionApi
    from edge_agent.inference import load_and_check
    from edgeline.core.protocol.signing import TrustStore
    from firmware_configs.schema import ApiSection
    from tests.agent.helpers import ApiHost
    from tests.factories import tiny_frames

    work = Path(tempfile.mkdtemp(prefix="bench-oip-"))
    init_keys(work / "keys")
    from tests.factories import write_tiny_bundle

    bundle = write_tiny_bundle(work / "bundle", load_signing_key(work / "keys"))
    model = load_and_check(bundle, TrustStore.load(KeyPaths(work / "keys").trust), threads=1)
    frames = tiny_frames(args.frames, seed=3)[0]
    pngs = [bytes(cv2.imencode(".png", f)[1]) for f in frames]
    pre, sess = model.preprocessor, model.session
    prepared = [pre(cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR)) for p in pngs]
    names_out = list(model.output_names or (model.output_name,))
    spec: dict[str, Any] = {
        "model": model.manifest.name,
        "input_name": model.input_name,
        "pngs": pngs,
        "tensors": prepared,
        "raw_bodies": [_raw_infer_body(p) for p in pngs],
    }
    counter = {"bare": 0, "bare_run": 0}

    def bare() -> None:
        i = counter["bare"] = counter["bare"] + 1
        img = cv2.imdecode(np.frombuffer(pngs[i % len(pngs)], np.uint8), cv2.IMREAD_COLOR)
        sess.run(names_out, {model.input_name: pre(img)[None, ...]})

    def bare_run() -> None:
        i = counter["bare_run"] = counter["bare_run"] + 1
        sess.run(names_out, {model.input_name: prepared[i % len(prepared)][None, ...]})

    section = ApiSection(enabled=True, port=0, max_body_bytes=1 << 20)
    api = PredictionApi(ApiHost(model, "bench"), section)
    api.start()
    _check_same_verdicts(api, spec)
    ctx = mp.get_context("spawn")
    load_before = os.getloadavg()
    http_arms = ("predict", "oip_image", "oip_image_raw", "oip_tensor")
    results: dict[str, Any] = {}
    try:
        for clients in (1, 4):
            n = args.requests if clients == 1 else max(1, args.requests // 2)
            arms: dict[str, list[dict[str, float]]] = {a: [] for a in ("bare_run", "bare", *http_arms)}
            _threads(bare, clients, 100)  # warm-up
            for _ in range(args.rounds):
                arms["bare_run"].append(_threads(bare_run, clients, n))
                arms["bare"].append(_threads(bare, clients, n))
                for arm in http_arms:
                    arms[arm].append(_http(ctx, api.address, arm, spec, clients, n))
            med: dict[str, Any] = {k: _median(v) for k, v in arms.items()}
            med["p50_differences_ms"] = {
                "oip_image_over_predict": _diff(med["oip_image"], med["predict"]),
                "oip_image_raw_over_predict": _diff(med["oip_image_raw"], med["predict"]),
                "oip_image_over_bare": _diff(med["oip_image"], med["bare"]),
                "oip_image_raw_over_bare": _diff(med["oip_image_raw"], med["bare"]),
                "predict_over_bare": _diff(med["predict"], med["bare"]),
                "oip_tensor_over_bare_run": _diff(med["oip_tensor"], med["bare_run"]),
            }
            med["cpu_ms_per_request"] = {arm: _cpu_bounds(med[arm], clients) for arm in http_arms}
            results[f"clients_{clients}"] = med
    finally:
        api.stop()
    results["frames"] = {"count": len(pngs), "format": "png", "bytes_mean": round(sum(map(len, pngs)) / len(pngs))}
    results["requests_per_client_per_round"] = {"1": args.requests, "4": max(1, args.requests // 2)}
    results["rounds"] = args.rounds
    results["loadavg_before"] = [round(x, 2) for x in load_before]
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    import importlib.metadata

    results["tritonclient"] = importlib.metadata.version("tritonclient")
    checks = {"verdicts_equal_predict": True}  # _check_same_verdicts raised otherwise
    return emit("oip", results, checks)


if __name__ == "__main__":
    raise SystemExit(main())
