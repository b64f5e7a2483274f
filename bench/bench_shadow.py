"""Frames per second and CPU per frame of the agent's inspection loop with a shadow challenger, against
the same loop without one, same frames, same run (rounds interleaved): as fast as the loop goes (the
worst case: the challenger gets only what CPU is spare), and at a line's camera rate.

The champion and the challenger are the demo's v1 (the MLP classifier the story trains, built here
from the synthetic line in a temporary workspace; the challenger is a second build with another seed,
so the two disagree on some parts as a real challenger does). The agent reads the frames from memory
as fast as it can (``block`` queue: every frame inspected), so frames per second is the champion's
throughput, timed from the first verdict (loading the models and starting the challenger's process
are not the pace); CPU per frame is this process's CPU (champion, reader, the shadow's handover
thread; the challenger's own process is not in it) over the frames.

    python bench/bench_shadow.py [--frames 5000] [--rounds 3] [--share 1.0] [--line-fps 30]

Goal (the project's issue on shadow deployments): the champion's frames per second drop <= 5% under
the default shadow policy (``spare_cpu``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit  # noqa: E402


def _build(work: Path) -> tuple[Path, Path, Path, list[Any]]:
    from dataclasses import replace

    from edgeline.demo.models import build_v1, make_datasets
    from edgeline.demo.settings import DemoSettings
    from edgeline.demo.workspace import Workspace

    ws = Workspace.create(work / "ws")
    ws.init_secrets()
    s = DemoSettings.make(quick=True, devices=3)
    make_datasets(ws, s, lambda _m: None)
    champion = build_v1(ws, s, lambda _m: None).bundle_dir
    other = replace(s, seed=s.seed + 1)
    ws2 = Workspace.create(work / "ws2")
    # the same keys sign both (one trust store); another seed of the same pipeline
    import shutil

    shutil.copytree(ws.keys, ws2.keys, dirs_exist_ok=True)
    make_datasets(ws2, other, lambda _m: None)
    challenger = build_v1(ws2, other, lambda _m: None).bundle_dir
    frames = [cv2.imread(str(p)) for p in sorted(ws.dataset.rglob("*.jpg"))]
    return champion, challenger, ws.trust_file, [f for f in frames if f is not None]


def _arm(
    frames: list[Any], champion: Path, trust: Path, shadow: dict[str, Any], work: Path, max_fps: float = 0.0
) -> dict[str, Any]:
    from edge_agent.runtime import Agent, AgentState
    from edge_agent.sources import MemoryCapture
    from firmware_configs.loader import parse_config

    cfg = parse_config(
        {
            "device": {"id": "bench"},
            "source": {
                "kind": "folder",
                "path": str(work),
                "queue_policy": "block",
                "queue_size": 8,
                "max_fps": max_fps,
            },
            "model": {"bundle": str(champion), "trust_file": str(trust)},
            "inference": {"stats_every": 0},
            "status": {"path": str(work / "status.json")},
            "cloud": {"enabled": False},
            "telemetry": {"enabled": False},
            "shadow": shadow,
        },
        "bench",
    )
    agent = Agent(cfg, capture=MemoryCapture(frames, "belt"), sinks=[], write_status=False)
    c0, t0 = time.process_time(), time.perf_counter()
    agent.start()
    while agent.state not in (AgentState.STOPPED, AgentState.FAILED):
        time.sleep(0.01)
    agent.wait(10.0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    st = agent.counters()
    n = int(st["frames"]["inspected"])
    # from the first verdict on: the start (loading the models, spawning the challenger) is not the pace
    busy = wall - float(st["first_verdict_s"] or 0.0)
    out: dict[str, Any] = {"frames": n, "fps": n / busy, "cpu_ms_per_frame": 1000.0 * cpu / n, "start_s": wall - busy}
    if st.get("shadow"):
        sh = st["shadow"]
        keys = (
            "compared",
            "behind_skips",
            "busy_skips",
            "budget_skips",
            "rate_skips",
            "sampled_out",
            "verdict_agreement",
        )
        out["shadow"] = {k: sh.get(k) for k in keys}
        out["shadow"]["compared_share"] = sh["compared"] / n if n else None
    return out


def _policy_defaults() -> dict[str, Any]:
    from firmware_configs.shadow_section import ShadowSection

    d = ShadowSection()
    return {
        "default_max_fps": d.max_fps,
        "default_max_duty": d.max_duty,
        "default_nice": d.nice,
        "default_idle_class": d.idle_class,
        "default_yield_when_behind": d.yield_when_behind,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=5000, help="frames per arm and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each arm")
    ap.add_argument("--share", type=float, default=1.0, help="[shadow] share")
    ap.add_argument("--nice", type=int, default=None, help="[shadow] nice (default: the section's)")
    ap.add_argument("--max-fps", type=float, default=None, help="[shadow] max_fps (default: the section's)")
    ap.add_argument("--max-duty", type=float, default=None, help="[shadow] max_duty (default: the section's)")
    ap.add_argument("--no-idle-class", action="store_true", help="[shadow] idle_class = false (SCHED_OTHER)")
    ap.add_argument(
        "--also-no-idle", action="store_true", help="a third arm, interleaved: the same policy with idle_class = false"
    )
    ap.add_argument(
        "--also-no-yield",
        action="store_true",
        help="another arm, interleaved: the same policy with yield_when_behind = false (compare at full speed too)",
    )
    ap.add_argument("--also-max-fps", type=float, default=None, help="another arm, interleaved: max_fps = this")
    ap.add_argument("--line-fps", type=float, default=30.0, help="the camera rate of the line-rate arm")
    ap.add_argument("--line-frames", type=int, default=300, help="frames of the line-rate arm")
    args = ap.parse_args(argv)
    import os

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        champion, challenger, trust, pool = _build(work)
        frames = (pool * (args.frames // len(pool) + 1))[: args.frames]
        arms: dict[str, list[dict[str, Any]]] = {"no_shadow": [], "shadow": []}
        if args.also_no_idle:
            arms["shadow_no_idle_class"] = []
        if args.also_no_yield:
            arms["shadow_no_yield"] = []
        capped = f"shadow_max_fps_{args.also_max_fps:g}" if args.also_max_fps is not None else ""
        if args.also_max_fps is not None:
            arms[capped] = []
        shadow: dict[str, Any] = {"enabled": True, "bundle": str(challenger), "share": args.share}
        for key, value in (("nice", args.nice), ("max_fps", args.max_fps), ("max_duty", args.max_duty)):
            if value is not None:
                shadow[key] = value
        if args.no_idle_class:
            shadow["idle_class"] = False
        load0 = os.getloadavg()[0]
        configs: dict[str, dict[str, Any]] = {"no_shadow": {}, "shadow": shadow}
        if args.also_no_idle:
            configs["shadow_no_idle_class"] = shadow | {"idle_class": False}
        if args.also_no_yield:
            configs["shadow_no_yield"] = shadow | {"yield_when_behind": False}
        if args.also_max_fps is not None:
            configs[capped] = shadow | {"max_fps": args.also_max_fps}
        names = list(configs)
        for r in range(args.rounds):
            # the arms' order turns every round: a later arm in a round ran slower whatever it was (an
            # arm with no shadow at all came out 3-8% slower in third place than in first)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                arms[name].append(_arm(frames, champion, trust, configs[name], work))
        line = frames[: args.line_frames]
        at_rate = {
            "no_shadow": _arm(line, champion, trust, {}, work, args.line_fps),
            "shadow": _arm(line, champion, trust, shadow, work, args.line_fps),
        }
        load1 = os.getloadavg()[0]
    fps = {k: statistics.median(r["fps"] for r in v) for k, v in arms.items()}
    cpu = {k: statistics.median(r["cpu_ms_per_frame"] for r in v) for k, v in arms.items()}
    drop = 1.0 - fps["shadow"] / fps["no_shadow"]
    drops = {k: 1.0 - v / fps["no_shadow"] for k, v in fps.items() if k != "no_shadow"}
    #: per round, each shadow arm against the no-shadow arm of the same round (the load moves between rounds)
    paired = {
        k: statistics.median(1.0 - r["fps"] / b["fps"] for r, b in zip(v, arms["no_shadow"], strict=True))
        for k, v in arms.items()
        if k != "no_shadow"
    }
    results = {
        "command": "python bench/bench_shadow.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "frames_per_round": args.frames,
        "rounds": arms,
        "median_fps": fps,
        "median_cpu_ms_per_frame": cpu,
        "champion_fps_drop": drop,
        "fps_drop_by_arm": drops,
        "paired_round_drop_median": paired,
        #: the [shadow] section of the shadow arm (the defaults of firmware_configs/shadow_section.py otherwise)
        "shadow_policy": {k: v for k, v in shadow.items() if k != "bundle"} | _policy_defaults(),
        #: the camera at a line's rate: every frame inspected either way; the share the challenger saw
        "line_rate": {"fps": args.line_fps, **at_rate},
        "loadavg_before_after": [round(load0, 2), round(load1, 2)],
    }
    return emit("shadow", results, {"champion_fps_drop_le_5pct": drop <= 0.05})


if __name__ == "__main__":
    sys.exit(main())
