"""A video of a passing inspection line, with per-frame ground truth to score an agent's verdicts.

The conveyor is indexed: each part enters from the left (belt and part moving), stops at the
inspection position for ``dwell_frames`` frames, and leaves to the right; a few frames of empty belt
separate parts. Ground truth goes next to the video:

* ``<video>.truth.csv``: one row per frame: ``frame,part,label,phase,x_offset`` where ``phase`` is
  ``enter``, ``inspect``, ``leave`` or ``gap`` (``part`` is -1 and ``label`` ``empty`` in a gap);
* ``<video>.truth.json``: fps, frame size, seed, lighting, part family, and per part its label and
  frame ranges.

Score verdicts on ``inspect`` frames: there the part is where the training images put it.

Codecs checked with this headless OpenCV/FFmpeg build (written AND read back): ``.avi`` -> MJPG
(default; per-frame JPEG, no inter-frame artefacts), ``.mp4`` -> mp4v, ``.mkv`` -> FFV1 (lossless,
large). H.264 (avc1) is not available for writing.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from converters.errors import DatasetError
from converters.synth.bracket import BRACKET_H, BRACKET_W
from converters.synth.casting import CASTING_REACH
from converters.synth.flange import FLANGE_R
from converters.synth.gasket import GASKET_HALF
from converters.synth.hexnut import HEX_R
from converters.synth.lighting import Lighting
from converters.synth.pcb import PCB_REACH, SCALE_JITTER
from converters.synth.render import _PLATE, ALL_CLASSES, CLASSES, FRAME_SIZE, Conditions, check_family, render_part

log = logging.getLogger(__name__)

FOURCC_BY_SUFFIX = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "FFV1"}
PHASES = ("enter", "inspect", "leave", "gap")


@dataclass(frozen=True)
class FrameTruth:
    frame: int
    part: int  # -1 in a gap
    label: str  # "empty" in a gap
    phase: str
    x_offset: float  # plate centre minus frame centre, pixels


@dataclass(frozen=True)
class PartTruth:
    index: int
    label: str
    first_frame: int
    inspect_first: int
    inspect_last: int
    last_frame: int


@dataclass(frozen=True)
class LineTruth:
    video: Path
    fps: float
    size: tuple[int, int]
    seed: int
    fourcc: str
    lighting: Lighting
    parts: tuple[PartTruth, ...]
    frames: tuple[FrameTruth, ...]
    family: str = "plate"

    @property
    def inspect_frames(self) -> list[FrameTruth]:
        return [f for f in self.frames if f.phase == "inspect"]


def truth_paths(video: Path) -> tuple[Path, Path]:
    video = Path(video)
    return video.with_name(video.name + ".truth.csv"), video.with_name(video.name + ".truth.json")


def _travel(w: int, family: str) -> float:
    """Belt travel from the inspection position until the part is fully off-screen."""
    if family == "flange":
        part_w = 2 * FLANGE_R
    elif family == "bracket":
        part_w = 2 * (math.hypot(BRACKET_W / 2, BRACKET_H / 2) + 6.0)  # at any angle, with its shadow
    elif family == "hexnut":
        part_w = 2 * (HEX_R + 14.0)  # at any angle, with its long, soft shadow
    elif family == "gasket":
        part_w = 2 * (GASKET_HALF + 6.0)  # at any angle, with its shadow
    elif family == "casting":
        part_w = 2 * (CASTING_REACH + 12.0)  # at any angle, with its soft shadow
    elif family == "pcb":
        part_w = 2 * (PCB_REACH * (1.0 + SCALE_JITTER) + 6.0)  # at any angle and scale, with its shadow
    else:
        part_w = _PLATE[0]
    return w / 2 + part_w * (w / FRAME_SIZE[0]) / 2 + 12.0


def _schedule(
    labels: Sequence[str], w: int, enter_frames: int, dwell_frames: int, gap_frames: int, family: str = "plate"
) -> list[FrameTruth]:
    travel = _travel(w, family)
    frames: list[FrameTruth] = []
    for part, label in enumerate(labels):
        for i in range(enter_frames):
            x = -travel * (1.0 - i / enter_frames)
            frames.append(FrameTruth(len(frames), part, label, "enter", round(x, 2)))
        for _ in range(dwell_frames):
            frames.append(FrameTruth(len(frames), part, label, "inspect", 0.0))
        for i in range(1, enter_frames + 1):
            frames.append(FrameTruth(len(frames), part, label, "leave", round(travel * i / enter_frames, 2)))
        for _ in range(gap_frames):
            frames.append(FrameTruth(len(frames), -1, "empty", "gap", 0.0))
    return frames


def write_line_video(
    path: Path,
    n_parts: int = 20,
    seed: int = 0,
    lighting: Lighting | None = None,
    *,
    conditions: Conditions | None = None,
    classes: Sequence[str] = CLASSES,
    labels: Sequence[str] | None = None,
    defect_rate: float = 0.4,
    fps: float = 10.0,
    size: tuple[int, int] = FRAME_SIZE,
    enter_frames: int = 8,
    dwell_frames: int = 6,
    gap_frames: int = 2,
    progress: Callable[[int], None] | None = None,
    family: str = "plate",
) -> LineTruth:
    """Write a video of ``n_parts`` parts passing the camera, plus its ground truth (see module doc).

    Part labels are drawn from ``classes``: ``ok`` with probability ``1 - defect_rate``, the defects
    evenly; or pass ``labels`` to fix the sequence. ``family`` picks the part (``"plate"``,
    ``"flange"``, ``"bracket"``, ``"hexnut"``, ``"gasket"``, ``"casting"`` or ``"pcb"``). Returns the ground truth."""
    check_family(family)
    path = Path(path)
    fourcc = FOURCC_BY_SUFFIX.get(path.suffix.lower())
    if fourcc is None:
        raise DatasetError(f"video {path.name}: use one of {', '.join(FOURCC_BY_SUFFIX)} (checked codecs)")
    cond = conditions or Conditions()
    if lighting is not None:
        cond = replace(cond, lighting=lighting)
    if not 0.0 <= defect_rate <= 1.0:
        raise DatasetError("defect_rate must be in [0, 1]")
    if min(enter_frames, dwell_frames) < 1 or gap_frames < 0 or not 0 < fps <= 1000:
        raise DatasetError("enter_frames and dwell_frames must be >= 1, gap_frames >= 0, 0 < fps <= 1000")
    rng = np.random.default_rng(seed)
    if labels is None:
        if not 1 <= n_parts <= 100_000:
            raise DatasetError("n_parts must be between 1 and 100000")
        labels = _draw_labels(rng, n_parts, classes, defect_rate)
    for lab in labels:
        if lab not in ALL_CLASSES:
            raise DatasetError(f"unknown class {lab!r}; known: {', '.join(ALL_CLASSES)}")
    w, h = size
    schedule = _schedule(labels, w, enter_frames, dwell_frames, gap_frames, family)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), float(fps), (w, h))
    if not writer.isOpened():
        raise DatasetError(f"OpenCV cannot write {fourcc} video to {path}")
    part_seeds = [int(x) for x in rng.integers(0, 2**63 - 1, size=len(labels))]
    step = _travel(w, family) / enter_frames  # belt travel per frame
    belt = 0.0
    try:
        for ft in schedule:
            if ft.phase != "inspect":  # the indexed belt stops while a part is inspected
                belt += step
            frame = render_part(
                ft.label,
                rng,
                conditions=cond,
                size=size,
                x_offset=ft.x_offset,
                belt_shift=int(belt),
                part_seed=part_seeds[ft.part] if ft.part >= 0 else None,
                family=family,
            )
            writer.write(frame)
            if progress is not None:
                progress(1)
    finally:
        writer.release()
    truth = LineTruth(path, float(fps), (w, h), seed, fourcc, cond.lighting, _parts(schedule), tuple(schedule), family)
    _write_truth(truth)
    _check_readable(path, len(schedule))
    log.info("wrote %s: %d parts, %d frames, %s", path, len(labels), len(schedule), fourcc)
    return truth


def _draw_labels(rng: np.random.Generator, n: int, classes: Sequence[str], defect_rate: float) -> list[str]:
    defects = [c for c in classes if c != "ok"]
    if "ok" not in classes:
        return [str(rng.choice(defects)) for _ in range(n)]
    if not defects:
        return ["ok"] * n
    return ["ok" if rng.random() >= defect_rate else str(rng.choice(defects)) for _ in range(n)]


def _parts(schedule: Sequence[FrameTruth]) -> tuple[PartTruth, ...]:
    by_part: dict[int, list[FrameTruth]] = {}
    for ft in schedule:
        if ft.part >= 0:
            by_part.setdefault(ft.part, []).append(ft)
    out = []
    for idx, fts in sorted(by_part.items()):
        inspect = [f.frame for f in fts if f.phase == "inspect"]
        out.append(PartTruth(idx, fts[0].label, fts[0].frame, inspect[0], inspect[-1], fts[-1].frame))
    return tuple(out)


def _write_truth(truth: LineTruth) -> None:
    csv_path, json_path = truth_paths(truth.video)
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["frame", "part", "label", "phase", "x_offset"])
        for ft in truth.frames:
            out.writerow([ft.frame, ft.part, ft.label, ft.phase, ft.x_offset])
    meta = {
        "video": truth.video.name,
        "fps": truth.fps,
        "size": list(truth.size),
        "seed": truth.seed,
        "fourcc": truth.fourcc,
        "frame_count": len(truth.frames),
        "lighting": asdict(truth.lighting),
        "family": truth.family,
        "parts": [asdict(p) for p in truth.parts],
    }
    json_path.write_text(json.dumps(meta, indent=1), "utf-8")


def _check_readable(path: Path, expected: int) -> None:
    cap = cv2.VideoCapture(str(path))
    try:
        ok, _ = cap.read()
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if not ok:
        raise DatasetError(f"wrote {path} but OpenCV cannot read it back")
    if count not in (expected, 0):  # some containers do not store a count; 0 means unknown
        raise DatasetError(f"wrote {expected} frames to {path} but it reads back {count}")


def read_line_truth(video: Path) -> LineTruth:
    """Load the ground truth written next to ``video``."""
    csv_path, json_path = truth_paths(Path(video))
    try:
        meta = json.loads(json_path.read_text("utf-8"))
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        frames = tuple(
            FrameTruth(int(r["frame"]), int(r["part"]), r["label"], r["phase"], float(r["x_offset"])) for r in rows
        )
        parts = tuple(PartTruth(**p) for p in meta["parts"])
        return LineTruth(
            Path(video),
            float(meta["fps"]),
            (int(meta["size"][0]), int(meta["size"][1])),
            int(meta["seed"]),
            str(meta["fourcc"]),
            Lighting(**meta["lighting"]),
            parts,
            frames,
            str(meta.get("family", "plate")),
        )
    except FileNotFoundError as exc:
        raise DatasetError(f"no ground truth next to {video} ({exc.filename} is missing)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"ground truth of {video} is unreadable: {exc}") from exc
