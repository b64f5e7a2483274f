"""Score the devices' own verdicts against the camera simulator's ground truth.

A verdict record carries the frame's ``ref`` (its index in the current camera connection) and
``frame_id`` (the agent's running count); ``frame_id - ref`` is constant within one connection, so
the records split into connections. Each is matched to the camera's connection whose send times
agree with the capture times (a reconnect makes a new one on both sides), and each frame then gets
its true label and the lighting it was rendered with.

Frames are *clean* when rendered with the normal lighting, *drifted* when at the drifted line's
target lighting; frames during the ramp count for neither.
"""

from __future__ import annotations

import csv
import logging
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: most seconds between the camera sending a frame and the agent capturing it, for a match
MAX_SKEW_S = 2.0


@dataclass(frozen=True)
class TruthRow:
    t: float
    label: str
    brightness: float
    contrast: float


@dataclass(frozen=True)
class Scored:
    device: str
    version: int
    truth: str
    predicted: str
    condition: str  # clean | drifted | ramp
    t: float
    verdict: str = ""  # ok | defect | unknown
    uncertain: bool = False


def load_truth(path: Path) -> dict[int, list[TruthRow]]:
    """Ground truth of one line: connection number -> rows in the order served."""
    out: dict[int, list[TruthRow]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    conn, index = int(row["conn"]), int(row["index"])
                    item = TruthRow(float(row["t"]), row["label"], float(row["brightness"]), float(row["contrast"]))
                except (KeyError, TypeError, ValueError):
                    continue  # a row cut short when the camera stopped
                rows = out.setdefault(conn, [])
                if index == len(rows):
                    rows.append(item)
    except FileNotFoundError:
        return {}
    return out


def condition(row: TruthRow, drifted: tuple[float, float]) -> str:
    if abs(row.brightness) < 0.5 and abs(row.contrast - 1.0) < 0.005:
        return "clean"
    if abs(row.brightness - drifted[0]) < 0.5 and abs(row.contrast - drifted[1]) < 0.005:
        return "drifted"
    return "ramp"


def _runs(records: Iterable[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    runs: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("type") != "verdict":
            continue
        try:
            offset = int(r["frame_id"]) - int(r["ref"])
        except (KeyError, TypeError, ValueError):
            continue
        runs.setdefault(offset, []).append(r)
    return runs


def _skew(run: Sequence[dict[str, Any]], rows: Sequence[TruthRow]) -> float:
    sample = run[:: max(1, len(run) // 25)]
    gaps = [abs(float(r["ts"]) - rows[int(r["ref"])].t) for r in sample if int(r["ref"]) < len(rows)]
    return statistics.median(gaps) if gaps else float("inf")


def match(
    records: Iterable[dict[str, Any]], truth: dict[int, list[TruthRow]]
) -> tuple[list[tuple[dict[str, Any], TruthRow]], list[dict[str, Any]]]:
    """Each verdict record paired with the camera's truth row of its frame, and the verdict records
    that could not be paired (no camera connection agrees with their times, or the row of their frame
    is not in the log yet)."""
    paired: list[tuple[dict[str, Any], TruthRow]] = []
    unpaired: list[dict[str, Any]] = []
    for run in _runs(records).values():
        best = min(truth, key=lambda c: _skew(run, truth[c]), default=None)
        if best is None or _skew(run, truth[best]) > MAX_SKEW_S:
            unpaired += run
            continue
        rows = truth[best]
        for r in run:
            i = int(r["ref"])
            if i >= len(rows):
                unpaired.append(r)
            else:
                paired.append((r, rows[i]))
    return paired, unpaired


def score_device(
    device: str, records: Iterable[dict[str, Any]], truth: dict[int, list[TruthRow]], drifted: tuple[float, float]
) -> tuple[list[Scored], int]:
    """Every verdict of ``device`` with its truth, and the number of verdicts that could not be matched."""
    paired, unpaired = match(records, truth)
    out = [
        Scored(
            device,
            int(r["model_version"]),
            row.label,
            str(r["label"]),
            condition(row, drifted),
            row.t,
            str(r.get("verdict", "")),
            bool(r.get("uncertain", False)),
        )
        for r, row in paired
    ]
    if unpaired:
        log.warning("%s: %d verdicts could not be matched to the camera's ground truth", device, len(unpaired))
    return out, len(unpaired)


@dataclass(frozen=True)
class Confusion:
    labels: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]

    @property
    def total(self) -> int:
        return sum(sum(r) for r in self.matrix)

    @property
    def accuracy(self) -> float | None:
        n = self.total
        return sum(self.matrix[i][i] for i in range(len(self.labels))) / n if n else None

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "matrix": [list(r) for r in self.matrix], "frames": self.total}


def confusion(frames: Iterable[Scored], labels: Sequence[str]) -> Confusion:
    index = {lab: i for i, lab in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for f in frames:
        i, j = index.get(f.truth), index.get(f.predicted)
        if i is not None and j is not None:
            m[i][j] += 1
    return Confusion(tuple(labels), tuple(tuple(r) for r in m))
