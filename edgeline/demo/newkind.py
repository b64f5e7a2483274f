"""A defect kind no model saw in training appears on one line (stage 8).

v3 is an inspection bundle (:func:`converters.inspection_build.build_inspection`: a good-part model
plus a classifier for the known defect kinds, joined as a noisy OR) built from the same training
images as v1. It only needs the dataset, so :class:`V3Build` starts it in a child process as soon as
the training images are rendered (stage 1), and the stage picks it up after v2's rollout. The stage
registers v3, rolls it out (canary, then the rest), then has the camera simulator show a share of
parts of a kind the training set does not contain (``crack`` by default) on one normally lit line,
and scores the devices' own verdicts on those parts against the camera's ground truth: the share
rejected or sent to review.

What v2 (the classifier) would have done is measured offline on rendered parts of the same kind, with
the code path the agents run (:func:`edge_agent.inference.inspect_frame`): v2 keeps the fleet's
story (stages 5-7) and is not left on a line of its own, so the comparison takes no line out of v3's
rollout. v3 is measured on the same rendered parts as well, which shows the live figure is not luck.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeline.core.fsutil import write_atomic
from edgeline.demo.errors import DemoError
from edgeline.demo.models import MODEL_NAME
from edgeline.demo.scoring import Scored
from edgeline.demo.settings import DemoSettings
from edgeline.demo.workspace import Workspace

log = logging.getLogger(__name__)

#: where a verdict sends a part: the reject chute, the review station, or on down the line
REJECT, REVIEW, PASS = "reject", "review", "pass"


def routed(verdict: str, uncertain: bool) -> str:
    """``defect`` goes to reject; ``unknown`` and uncertain verdicts to review; a sure ``ok`` passes."""
    if verdict == "defect":
        return REJECT
    if verdict == "unknown" or uncertain:
        return REVIEW
    return PASS


def shares(routes: Iterable[str]) -> dict[str, Any]:
    c = Counter(routes)
    n = sum(c.values())
    out: dict[str, Any] = {"frames": n, **{k: c.get(k, 0) for k in (REJECT, REVIEW, PASS)}}
    out["caught"] = round((c.get(REJECT, 0) + c.get(REVIEW, 0)) / n, 4) if n else None
    out["rejected"] = round(c.get(REJECT, 0) / n, 4) if n else None
    return out


@dataclass(frozen=True)
class V3Result:
    """What the stage needs of v3's build: the signed bundle, its manifest and its build report."""

    bundle_dir: Path
    manifest: Any  # edgeline.core.protocol.manifest.Manifest
    kind: str
    metrics: dict[str, float]
    report: dict[str, Any]


class V3Build:
    """v3's build in a child process (``python -m edgeline.demo.newkind``), started as soon as the
    training images exist. A process rather than a thread: v1's build and v2's retraining run in the
    demo process meanwhile, and two builds sharing one interpreter and one BLAS thread pool slowed
    both several times over on 2 cores (v2's retraining 13 s -> 54 s, v3 68 s). The child runs at a
    lower priority with one BLAS thread, so it mostly uses the cores the waiting stages leave idle;
    it writes its progress and its result to files in the workspace and is stopped with the other
    children (it also dies with the demo)."""

    def __init__(self, ws: Workspace, s: DemoSettings) -> None:
        self.ws = ws
        self.settings = s
        self.dir = ws.root / "logs"
        self.progress_file = self.dir / "v3-build.progress"
        self.result_file = self.dir / "v3-build.json"
        self.log_path = self.dir / "v3-build.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.seconds: float | None = None
        self.cpu_s: float | None = None

    def argv(self) -> list[str]:
        s = self.settings
        return [
            sys.executable,
            "-m",
            "edgeline.demo.newkind",
            "--dataset",
            str(self.ws.dataset),
            "--out",
            str(self.ws.bundle("v3")),
            "--keys",
            str(self.ws.keys),
            "--folds",
            str(s.v3_folds),
            "--augment-copies",
            str(s.v3_augment_copies),
            "--brightness=" + ",".join(str(v) for v in s.v3_light_brightness),  # "=": the value starts with "-"
            "--contrast=" + ",".join(str(v) for v in s.v3_light_contrast),
            "--max-false-reject",
            str(s.v3_max_false_reject),
            "--max-escape",
            str(s.v3_max_escape),
            "--seed",
            str(s.seed),
            "--nice",
            str(s.v3_nice),
            "--progress-file",
            str(self.progress_file),
            "--result-file",
            str(self.result_file),
        ]

    def start(self) -> None:
        from edgeline.demo.processes import spawn

        self.result_file.unlink(missing_ok=True)
        self.started = time.monotonic()
        self.proc = spawn(self.argv(), self.log_path, env=dict(SINGLE_THREAD))

    def progress(self) -> str:
        try:
            return self.progress_file.read_text("utf-8").strip() or "starting"
        except OSError:
            return "starting"

    def stop(self) -> int | None:
        from edgeline.demo.processes import stop_process

        return stop_process(self.proc, 5.0)

    def wait(self, timeout: float, report: Any, trust: Any) -> V3Result:
        """The finished, verified build (raises :class:`DemoError` when it failed or took too long)."""
        from edge_agent.bundle import open_bundle
        from edgeline.core.errors import EdgelineError
        from edgeline.demo.processes import tail

        if self.proc is None:
            raise DemoError("v3 was never started")
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.stop()
                raise DemoError(f"v3 did not finish building within {timeout:.0f}s ({self.progress()})")
            report(f"waiting for v3 (building since stage 1): {self.progress()}")
            time.sleep(0.3)
        try:
            doc = json.loads(self.result_file.read_text("utf-8"))
        except (OSError, ValueError):
            raise DemoError(
                f"building v3 stopped (exit {self.proc.returncode}) without a result: {tail(self.log_path, 600)}"
            ) from None
        self.seconds, self.cpu_s = doc.get("seconds"), doc.get("cpu_s")
        if not doc.get("ok"):
            raise DemoError(f"building v3 failed: {doc.get('error')}")
        bundle_dir = Path(doc["bundle_dir"])
        try:
            manifest = open_bundle(bundle_dir, trust, check_expiry=False).manifest
            report_doc = json.loads((bundle_dir / "report" / "report.json").read_text("utf-8"))
        except (EdgelineError, OSError, ValueError) as exc:
            raise DemoError(f"v3's bundle cannot be read: {exc}") from exc
        return V3Result(bundle_dir, manifest, str(doc.get("kind")), dict(manifest.metrics), report_doc)


#: the child's BLAS and OpenMP use one thread: the demo process and the agents share the cores
SINGLE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class _Progress:
    """The build's progress hook, written to a file the demo shows while it waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._name = ""
        self._total: int | None = None
        self._done = 0
        self._last = 0.0

    def _write(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last > 0.5:
            self._last = now
            with contextlib.suppress(OSError):
                write_atomic(self.path, text.encode())

    def stage(self, name: str, total: int | None = None) -> None:
        self._name, self._total, self._done = name, total, 0
        self._write(name, force=True)

    def advance(self, n: int = 1) -> None:
        self._done += n
        self._write(f"{self._name} {self._done}/{self._total}" if self._total else self._name)


def build_v3(
    dataset: Path,
    out: Path,
    keys: Path,
    *,
    folds: int,
    augment_copies: int,
    brightness: tuple[float, float],
    contrast: tuple[float, float],
    max_false_reject: float,
    max_escape: float,
    seed: int,
    progress: Any = None,
) -> Any:
    """The inspection bundle: same images as v1, ``kind="auto"`` (hybrid: every defect kind of the
    dataset has enough images for the classifier), fewer folds than the library default to stay quick,
    and random light wide enough for a line that runs darker than the training images."""
    from converters.inspection_build import build_inspection
    from converters.line_gate import LineTargets
    from converters.photometric import photometric_augment

    return build_inspection(
        dataset,
        out,
        kind="auto",
        key_dir=keys,
        name=MODEL_NAME,
        version=3,
        folds=folds,
        augment_copies=augment_copies,
        augment=photometric_augment(brightness=brightness, contrast=contrast),
        targets=LineTargets(max_false_reject=max_false_reject, max_escape=max_escape),
        seed=seed,
        lineage={"built_by": "edgeline demo", "note": "inspection model: good parts + known defect kinds"},
        progress=progress,
    )


def render_parts(kind: str, n: int, seed: int) -> list[np.ndarray]:
    """``n`` parts of ``kind`` as the camera shows them (rendered, JPEG-encoded at the camera's
    quality and decoded, like the agent reads them), normal lighting."""
    from converters.synth import render_part

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        frame = render_part(kind, rng)
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise DemoError("JPEG encoding failed")
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None:
            raise DemoError("JPEG decoding failed")
        out.append(np.asarray(img))
    return out


def offline_routes(bundle_dir: Path, trust: Any, frames: list[np.ndarray]) -> dict[str, Any]:
    """Where a bundle sends each frame, through the agents' own path (verify, load, self-test,
    preprocess, run, decide), with the labels behind the verdicts."""
    from edge_agent.inference import inspect_frame, load_and_check
    from edgeline.core.errors import EdgelineError

    try:
        model = load_and_check(bundle_dir, trust, check_expiry=False)
        verdicts = [inspect_frame(model, f, i).verdict for i, f in enumerate(frames)]
    except EdgelineError as exc:
        raise DemoError(f"cannot run {bundle_dir} offline: {exc}") from exc
    out = shares(routed(v.verdict, v.uncertain) for v in verdicts)
    out["labels"] = dict(Counter(v.label for v in verdicts if v.verdict != "ok").most_common())
    return out


def live_routes(frames: Iterable[Scored]) -> dict[str, Any]:
    frames = list(frames)
    out = shares(routed(f.verdict, f.uncertain) for f in frames)
    out["labels"] = dict(Counter(f.predicted for f in frames if f.verdict != "ok").most_common())
    return out


def _pair(text: str) -> tuple[float, float]:
    lo, hi = (float(x) for x in text.split(","))
    return lo, hi


def main(argv: list[str] | None = None) -> int:
    """Build v3 (see :class:`V3Build`); the result, or the reason it failed, goes to ``--result-file``."""
    p = argparse.ArgumentParser(prog="python -m edgeline.demo.newkind", description=main.__doc__)
    for flag in ("--dataset", "--out", "--keys", "--progress-file", "--result-file"):
        p.add_argument(flag, required=True, type=Path)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--augment-copies", type=int, default=1)
    p.add_argument("--brightness", type=_pair, default=(-80.0, 30.0))
    p.add_argument("--contrast", type=_pair, default=(0.65, 1.2))
    p.add_argument("--max-false-reject", type=float, default=0.05)
    p.add_argument("--max-escape", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--nice", type=int, default=0, help="lower this process's priority by this much")
    args = p.parse_args(argv)
    if args.nice > 0:
        with contextlib.suppress(OSError):
            os.nice(args.nice)
    logging.basicConfig(level=os.environ.get("EDGELINE_LOG_LEVEL", "INFO").upper(), stream=sys.stderr)
    t0, c0 = time.monotonic(), time.process_time()
    doc: dict[str, Any]
    try:
        from converters.errors import ConverterError
    except ImportError as exc:  # the cloud extras are missing
        doc = {"ok": False, "error": f"the training tools are not installed: {exc}"}
    else:
        try:
            r = build_v3(
                args.dataset,
                args.out,
                args.keys,
                folds=args.folds,
                augment_copies=args.augment_copies,
                brightness=args.brightness,
                contrast=args.contrast,
                max_false_reject=args.max_false_reject,
                max_escape=args.max_escape,
                seed=args.seed,
                progress=_Progress(args.progress_file),
            )
            doc = {"ok": True, "bundle_dir": str(r.bundle_dir), "kind": r.kind}
        except ConverterError as exc:
            doc = {"ok": False, "error": str(exc)}
    doc.update(seconds=round(time.monotonic() - t0, 2), cpu_s=round(time.process_time() - c0, 2))
    write_atomic(args.result_file, json.dumps(doc).encode())
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
