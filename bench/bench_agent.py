"""Agent throughput, memory and start-up, measured side by side in one run.

* frames/s of the full agent on a video file (source thread, bounded queue, preprocessing, ONNX
  Runtime, verdict, counters, input statistics on every frame, JSONL sink) divided by a bare loop on
  the same file (cv2 read -> the same Preprocessor -> session.run). Rounds alternate, medians are
  compared. Check: ratio >= 0.9.
* resident memory of an agent process with the model loaded (a child process, so the numbers are the
  agent's own), and the time from start to the first verdict (from ``Agent.start()``, which verifies,
  loads and self-tests the bundle; and from process launch).

Video: the synthetic line video of ``converters.synth`` when it is importable, else synthetic frames
written here. Model: ``--bundle/--trust``, else a tiny signed bundle built for the run.

    python bench/bench_agent.py [--frames 2000] [--rounds 5] [--bundle DIR --trust FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit  # noqa: E402
from converters.keys import KeyPaths, init_keys, load_signing_key  # noqa: E402
from edge_agent.inference import load_and_check  # noqa: E402
from edge_agent.model import LoadedModel  # noqa: E402
from edge_agent.runtime import Agent  # noqa: E402
from edgeline.core.protocol.signing import TrustStore  # noqa: E402
from firmware_configs.loader import parse_config  # noqa: E402


def make_video(path: Path, frames: int) -> str:
    try:
        from converters.synth.video import write_line_video

        parts = max(1, frames // 16)  # enter 8 + dwell 6 + gap 2 frames per part
        write_line_video(path, n_parts=parts, seed=3)
        return "converters.synth line video"
    except Exception as exc:  # converters not there (device install) or not ready: own frames
        print(f"(line video unavailable: {exc}; using synthetic frames)", file=sys.stderr)
    from edge_agent.simulate import synthetic_frames

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 480))
    for f in synthetic_frames(frames, size=(480, 640)):
        writer.write(f)
    writer.release()
    return "synthetic 640x480 MJPG"


def make_bundle(work: Path) -> tuple[Path, Path]:
    from tests.factories import write_tiny_bundle

    keys = work / "keys"
    init_keys(keys)
    bundle = write_tiny_bundle(work / "bundle", load_signing_key(keys))
    return bundle, KeyPaths(keys).trust


CPU: dict[str, list[float]] = {"bare": [], "agent": []}


def bare_loop(video: Path, model: LoadedModel) -> tuple[int, float]:
    pre, sess = model.preprocessor, model.session
    name_in, name_out = model.input_name, model.output_name
    c0 = time.process_time()
    t0 = time.perf_counter()
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        sess.run([name_out], {name_in: pre(frame)[None, ...]})
        n += 1
    cap.release()
    dt = time.perf_counter() - t0
    CPU["bare"].append((time.process_time() - c0) / max(n, 1))
    return n, dt


def agent_config(video: Path, work: Path, bundle: Path, trust: Path) -> dict[str, Any]:
    return {
        "device": {"id": "bench"},
        "source": {"kind": "file", "path": str(video), "queue_size": 16},
        "model": {"bundle": str(bundle), "trust_file": str(trust)},
        "inference": {"threads": 1},  # default stats_every (input statistics sampled)
        "sinks": {"jsonl": {"path": str(work / "verdicts.jsonl"), "max_bytes": 64 * 1024 * 1024}},
        "status": {"path": str(work / "status.json"), "interval_s": 1.0},
        "cloud": {"enabled": False},
        "telemetry": {"enabled": False},
    }


def agent_loop(cfg: dict[str, Any], model: LoadedModel) -> tuple[int, float]:
    agent = Agent(parse_config(cfg, "bench"), model=model)
    c0 = time.process_time()
    t0 = time.perf_counter()
    agent.run()
    dt = time.perf_counter() - t0
    n = agent.counters()["frames"]["inspected"]
    CPU["agent"].append((time.process_time() - c0) / max(n, 1))
    return n, dt


CHILD = textwrap.dedent("""
    import json, sys, time
    t_start = time.time()
    from edge_agent.runtime import Agent
    from firmware_configs.loader import parse_config
    cfg = parse_config(json.loads(sys.argv[1]), "bench")
    agent = Agent(cfg)
    t_agent = time.time()
    agent.run()
    c = agent.counters()
    status = {k: v for k, v in (line.split(":", 1) for line in open("/proc/self/status")) }
    print(json.dumps({"t_start": t_start, "t_agent": t_agent, "first_verdict_s": c["first_verdict_s"],
                      "inspected": c["frames"]["inspected"], "model": c["model"]["name"],
                      "rss_kb": int(status["VmRSS"].split()[0]), "hwm_kb": int(status["VmHWM"].split()[0])}))
""")


def child_run(cfg: dict[str, Any]) -> dict[str, Any]:
    launched = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    doc["launch_to_first_verdict_s"] = doc["t_agent"] - launched + doc["first_verdict_s"]
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--trust", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeline-bench-agent-"))
    video = work / "line.avi"
    video_kind = make_video(video, args.frames)
    if args.bundle:
        bundle, trust = args.bundle, args.trust or ROOT / "keys" / "trust.json"
        bundle_kind = str(bundle)
    else:
        bundle, trust = make_bundle(work)
        bundle_kind = "tests.factories tiny bundle (float logistic regression, 32x32 pixels)"
    model = load_and_check(bundle, TrustStore.load(trust), check_expiry=False)
    cfg = agent_config(video, work, bundle, trust)
    cfg_every = {**cfg, "inference": {"threads": 1, "stats_every": 1}}
    bare_fps, agent_fps, every_fps, frames = [], [], [], 0
    bare_loop(video, model)  # warm-up: file cache, ORT
    for _ in range(args.rounds):
        n, dt = bare_loop(video, model)
        bare_fps.append(n / dt)
        for c, out in ((cfg, agent_fps), (cfg_every, every_fps)):
            (work / "verdicts.jsonl").unlink(missing_ok=True)
            m, dt2 = agent_loop(c, model)
            out.append(m / dt2)
            if m != n:
                raise SystemExit(f"agent inspected {m} frames, bare loop read {n}")
        frames = n
    # Rounds alternate bare/agent, so each pair sees the same machine load: the median of the
    # per-pair ratios is the figure checked (the ratio of the medians is reported too).
    ratio = statistics.median(a / b for a, b in zip(agent_fps, bare_fps, strict=True))
    ratio_of_medians = statistics.median(agent_fps) / statistics.median(bare_fps)
    child = child_run(cfg)
    h, w = cv2.VideoCapture(str(video)).read()[1].shape[:2]
    spec = model.manifest.preprocessing
    results = {
        "video": {"kind": video_kind, "frames": frames, "size": [w, h]},
        "model": {"bundle": bundle_kind, "features": spec.features, "input": list(model.manifest.input.shape)},
        "bare_fps": [round(x, 1) for x in bare_fps],
        "agent_fps": [round(x, 1) for x in agent_fps],
        "bare_fps_median": round(statistics.median(bare_fps), 1),
        "agent_fps_median": round(statistics.median(agent_fps), 1),
        "fps_ratio_agent_over_bare": round(ratio, 3),
        "fps_ratio_of_medians": round(ratio_of_medians, 3),
        # best round of each: the closest to an unloaded machine
        "fps_ratio_of_best": round(max(agent_fps) / max(bare_fps), 3),
        # CPU time (all threads) per frame: less sensitive than wall time to other load on the machine
        "cpu_us_per_frame_bare": round(statistics.median(CPU["bare"][1:]) * 1e6, 1),
        "cpu_us_per_frame_agent": round(statistics.median(CPU["agent"][0::2]) * 1e6, 1),
        "cpu_us_per_frame_agent_stats_every_frame": round(statistics.median(CPU["agent"][1::2]) * 1e6, 1),
        "stats_every": parse_config(cfg, "bench").inference.stats_every,
        "agent_stats_every_frame_fps": [round(x, 1) for x in every_fps],
        "fps_ratio_stats_every_frame": round(
            statistics.median(a / b for a, b in zip(every_fps, bare_fps, strict=True)), 3
        ),
        "rounds": args.rounds,
        "agent_process_rss_mb": round(child["rss_kb"] / 1024, 1),
        "agent_process_peak_rss_mb": round(child["hwm_kb"] / 1024, 1),
        "start_to_first_verdict_s": round(child["first_verdict_s"], 4),
        "launch_to_first_verdict_s": round(child["launch_to_first_verdict_s"], 3),
        "latency_per_frame_ms_p50": json.loads((work / "status.json").read_text())["latency"].get("p50_ms"),
    }
    return emit("agent", results, {"fps_ratio_at_least_0.9": ratio >= 0.9})


if __name__ == "__main__":
    raise SystemExit(main())
