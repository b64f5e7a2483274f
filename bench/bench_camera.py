"""Camera recovery: how long after a camera comes back do frames resume, side by side in one run.

A loopback HTTP MJPEG camera (the one the agent tests serve) goes away and comes back, ``--reps``
times per scenario and arm:

* ``outage``: the camera process is gone for ``--outage`` seconds (connections refused), then back.
* ``freeze``: the camera hangs for ``--outage`` seconds with its connections open (nothing sent, new
  connections accepted and left hanging), then sends again. Also measured: how long the reader takes
  to notice (leave STREAMING).

Arms: ``edgeline`` — the ``[source]`` defaults (backoff 0.5 s doubling to a 2 s cap with jitter,
reconnect probe every 0.25 s, stall watchdog 10 frame intervals within [2 s, 3 s]); ``previous`` —
the earlier defaults (backoff doubling to 30 s, no jitter, no probe, no watchdog). Both with OpenCV's
open and read timeouts at their 5 s defaults.

Check: in the ``edgeline`` arm, frames resume within 2 s of the camera coming back, in every
repetition of both scenarios.

    python bench/bench_camera.py [--outage 10] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit  # noqa: E402
from edge_agent.frame_queue import FrameQueue  # noqa: E402
from edge_agent.source_state import Backoff, SourceState  # noqa: E402
from edge_agent.sources import Frame, LiveSettings, SourceReader, build_capture  # noqa: E402
from firmware_configs.schema import SourceSection  # noqa: E402
from tests.agent.helpers import MjpegCamera  # noqa: E402
from tests.factories import tiny_frames  # noqa: E402


class Watch:
    """Drains the reader's queue, keeping the arrival time of every frame."""

    def __init__(self, queue: FrameQueue[Frame]) -> None:
        self.queue = queue
        self.arrivals: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            f = self.queue.get(timeout=0.5)
            if f is None:
                if self.queue.closed:
                    return
                continue
            self.arrivals.append(time.monotonic())

    def first_after(self, t: float, timeout: float = 120.0) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [a for a in self.arrivals if a > t]
            if later:
                return later[0] - t
            time.sleep(0.005)
        return None


def reader_for(cam: MjpegCamera, arm: str, queue: FrameQueue[Frame]) -> SourceReader:
    if arm == "edgeline":
        return SourceReader.from_section(SourceSection(kind="url", url=cam.url), queue)
    # the previous defaults: no watchdog (so OpenCV's read timeout stays at read_timeout_ms), no probe
    section = SourceSection(kind="url", url=cam.url, stall_intervals=0, reconnect_probe_s=0, reconnect_max_s=30)
    return SourceReader(
        build_capture(section),
        queue,
        backoff=Backoff(0.5, 30.0, jitter=0.0),
        live_settings=LiveSettings(probe_s=0.0, stall_intervals=0.0),
    )


def one(arm: str, scenario: str, outage_s: float) -> dict[str, float | None]:
    cam = MjpegCamera(tiny_frames(20, seed=7)[0], fps=30.0)
    cam.start()
    q: FrameQueue[Frame] = FrameQueue(4, "drop_oldest")
    reader = reader_for(cam, arm, q)
    watch = Watch(q)
    reader.start()
    try:
        t0 = time.monotonic()
        if watch.first_after(t0 - 1, 30) is None:
            raise RuntimeError("the camera never streamed")
        time.sleep(1.0)
        t_gone = time.monotonic()
        if scenario == "outage":
            cam.stop()
        else:
            cam.freeze()
        noticed: float | None = None
        while time.monotonic() - t_gone < outage_s:
            if noticed is None and reader.state is not SourceState.STREAMING:
                noticed = time.monotonic() - t_gone
            time.sleep(0.01)
        t_back = time.monotonic()
        if scenario == "outage":
            cam.start()
        else:
            cam.thaw()
        resume = watch.first_after(t_back)
        return {"resume_s": resume, "noticed_s": noticed, "reconnects": float(reader.machine.reconnects)}
    finally:
        reader.stop()
        cam.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outage", type=float, default=10.0, help="seconds the camera is away or frozen")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    for scenario in ("outage", "freeze"):
        for arm in ("edgeline", "previous"):
            runs = [one(arm, scenario, args.outage) for _ in range(args.reps)]
            resumes = [r["resume_s"] for r in runs]
            known = [x for x in resumes if x is not None]
            results[f"{scenario}_{arm}"] = {
                "resume_s": [None if x is None else round(x, 3) for x in resumes],
                "resume_median_s": round(statistics.median(known), 3) if known else None,
                "resume_max_s": round(max(known), 3) if known else None,
                "noticed_s": [None if r["noticed_s"] is None else round(r["noticed_s"], 3) for r in runs],
            }
    results["outage_s"] = args.outage
    results["reps"] = args.reps
    results["loadavg_before"] = [round(x, 2) for x in load_before]
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    checks = {
        f"{s}_resumes_within_2s": all(x is not None and x <= 2.0 for x in results[f"{s}_edgeline"]["resume_s"])
        for s in ("outage", "freeze")
    }
    return emit("camera_recovery", results, checks)


if __name__ == "__main__":
    raise SystemExit(main())
