"""Field metrics on the device: the defect-score histograms of a window's verdicts, and the feedback
counts read from the feedback store when a window is released (wire form: :mod:`edgeline.core.
protocol.field_window`).

:class:`FieldTally` lives in a :class:`~edge_agent.telemetry.windows.RawWindow`: it merges by
addition (the minimum frame count rule), persists with a pending window, and takes the window's
Laplace noise (:meth:`FieldTally.noised`: the net cells of one block, the window's own version's,
always present, so which blocks a window carries says nothing). :func:`read_feedback` turns the
feedback log written since a cursor into counts: per model version, (side, truth, score bin)
cells. No result id, part id, name or single confidence goes further than this module.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge_agent.feedback.rules import ConfusionCounts, LogEntry
from edge_agent.verdict import Verdict
from edgeline.core.protocol.field_window import (
    MAX_FIELD_VERSIONS,
    SCORE_BINS,
    FeedbackCells,
    FieldMetrics,
    FieldVersion,
)

log = logging.getLogger(__name__)

VersionKey = tuple[str, int]
#: cells of one version's feedback: pass x (ok, defect) x bins, reject x (ok, defect) x bins, unknown x 2
CELLS = 4 * SCORE_BINS + 2


def defect_score(verdict: str, confidence: float | None) -> float | None:
    """The defect score of a verdict: ``1 - confidence`` for ok, ``confidence`` for defect, else None."""
    if confidence is None or not math.isfinite(confidence):
        return None
    if verdict == "ok":
        return 1.0 - float(confidence)
    if verdict == "defect":
        return float(confidence)
    return None


def score_bin(score: float) -> int:
    return min(SCORE_BINS - 1, max(0, int(score * SCORE_BINS)))


def cell_of(verdict: str, truth: str, confidence: float | None) -> int:
    """The cell index of one feedback: the verdict's side and score bin, the truth as ok/defect."""
    defect = int(truth != "ok")
    if verdict not in ("ok", "defect"):
        return 4 * SCORE_BINS + defect
    score = defect_score(verdict, confidence)
    b = score_bin(score) if score is not None else (0 if verdict == "ok" else SCORE_BINS - 1)
    side = 0 if verdict == "ok" else 2
    return (side + defect) * SCORE_BINS + b


def _cell_key(entry: LogEntry, truth: str) -> tuple[str, str]:
    return (str(cell_of(entry.verdict, truth, entry.confidence)), "")


class FeedbackSource(Protocol):
    """What the tally reads from the feedback store (:class:`edge_agent.feedback.store.FeedbackStore`)."""

    def confusion_since(
        self, cursor: int, cell: Callable[[LogEntry, str], tuple[str, str]] | None = None
    ) -> tuple[ConfusionCounts, int]: ...

    def log_position(self) -> int: ...


@dataclass
class FieldTally:
    score_pass: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BINS, np.int64))
    score_reject: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BINS, np.int64))
    #: per version: row 0 the cells added, row 1 the cells retracted
    feedback: dict[VersionKey, np.ndarray] = field(default_factory=dict)
    feedback_gap: bool = False
    #: the Laplace scale of the noise these counts carry (set by :meth:`noised`; never persisted)
    noise_scale: float | None = None
    #: send every block, even one whose cells are all 0 (a noised window's own version: its presence
    #: must not depend on the feedback; set by :meth:`noised`, never persisted)
    always: bool = False

    def add_verdict(self, v: Verdict) -> None:
        score = defect_score(v.verdict, v.confidence)
        if score is None:
            return
        (self.score_pass if v.verdict == "ok" else self.score_reject)[score_bin(score)] += 1

    def merge(self, other: FieldTally) -> FieldTally:
        fb = {k: a.copy() for k, a in self.feedback.items()}
        for k, a in other.feedback.items():
            fb[k] = fb[k] + a if k in fb else a.copy()
        return FieldTally(
            self.score_pass + other.score_pass,
            self.score_reject + other.score_reject,
            fb,
            self.feedback_gap or other.feedback_gap,
        )

    def without_feedback(self) -> FieldTally:
        return FieldTally(self.score_pass.copy(), self.score_reject.copy())

    def noised(
        self, noisy: Callable[[np.ndarray], np.ndarray], scale: float, own: VersionKey | None = None
    ) -> FieldTally:
        """Every count through ``noisy`` (the window's Laplace noise of scale ``scale``, signed: the
        counts keep their sign, see :mod:`edgeline.core.protocol.field_window`).

        Which feedback blocks a noised window carries must not depend on the feedback itself (a block
        present only when some part got feedback, or a retracted block only when one was replaced,
        would tell so whatever the noise on its cells). So the net cells (added minus retracted) go
        out noised once, in ``added``, with no retracted block: the same sensitivity (a replaced
        feedback moves one part from one cell to another, two cells), half the noise variance of two
        noised blocks. With ``own`` (the window's model version), exactly one block goes out, that
        version's, whether or not anything was given; feedback on another version's verdicts in this
        window is left out (logged): its block's presence would say that feedback was given. Without
        ``own``, the blocks of the versions the tally holds (the presence of each is then not
        protected)."""
        keys = [own] if own is not None else list(self.feedback)
        fb = {}
        for key in keys:
            a = self.feedback.get(key)
            net = np.zeros(CELLS, np.int64) if a is None else a[0] - a[1]
            fb[key] = np.vstack([noisy(net), np.zeros(CELLS, np.int64)])
        left = [k for k in self.feedback if k not in fb and self.feedback[k].any()]
        if left:
            log.warning(
                "feedback on %s in a noised window of %s: not sent (under noise a window carries its own "
                "version's block only)",
                ", ".join(f"{n} v{v}" for n, v in left),
                f"{own[0]} v{own[1]}" if own is not None else "-",
            )
        return FieldTally(
            noisy(self.score_pass), noisy(self.score_reject), fb, self.feedback_gap, scale, always=own is not None
        )

    def add_feedback(self, counts: ConfusionCounts) -> None:
        """Add the cells of :func:`read_feedback`'s counts (keys are cell indices)."""
        for row, part in ((0, counts.added), (1, counts.retracted)):
            for key, cells in part.items():
                arr = self.feedback.setdefault(key, np.zeros((2, CELLS), np.int64))
                for (cell, _), n in cells.items():
                    arr[row, int(cell)] += n
        self.feedback_gap = self.feedback_gap or counts.gap

    # -- persistence (a pending window; stays on the device) -----------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "score_pass": self.score_pass.tolist(),
            "score_reject": self.score_reject.tolist(),
            "feedback": [[name, version, a.tolist()] for (name, version), a in self.feedback.items()],
            "gap": self.feedback_gap,
        }

    @classmethod
    def from_state(cls, d: Mapping[str, Any] | None) -> FieldTally:
        if not d:  # a window kept by a release before field metrics
            return cls()
        fb = {(str(n), int(v)): np.asarray(a, np.int64).reshape(2, CELLS) for n, v, a in d.get("feedback", [])}
        return cls(
            np.asarray(d["score_pass"], np.int64), np.asarray(d["score_reject"], np.int64), fb, bool(d.get("gap"))
        )

    # -- the wire ------------------------------------------------------------------------------------------
    def wire(self) -> FieldMetrics:
        keys = sorted(self.feedback, key=lambda k: (k[0], -k[1]))
        if len(keys) > MAX_FIELD_VERSIONS:  # kept: the newest versions of each model, the rest logged
            keys = sorted(keys, key=lambda k: -k[1])[:MAX_FIELD_VERSIONS]
            log.warning(
                "feedback for %d model versions in one window; reporting the newest %d",
                len(self.feedback),
                MAX_FIELD_VERSIONS,
            )
        versions = []
        for key in keys:
            added, retracted = self.feedback[key]
            if not self.always and not added.any() and not retracted.any():
                continue
            versions.append(
                FieldVersion(
                    model=key[0] or "_",
                    version=key[1],
                    added=_cells(added),
                    retracted=_cells(retracted) if retracted.any() else None,
                )
            )
        return FieldMetrics(
            score_pass=[int(x) for x in self.score_pass],
            score_reject=[int(x) for x in self.score_reject],
            feedback=versions,
            feedback_gap=self.feedback_gap,
            noise_scale=self.noise_scale,
        )


def _cells(a: np.ndarray) -> FeedbackCells:
    b = SCORE_BINS
    rows = [[int(x) for x in a[i * b : (i + 1) * b]] for i in range(4)]
    return FeedbackCells(
        pass_ok=rows[0],
        pass_defect=rows[1],
        reject_ok=rows[2],
        reject_defect=rows[3],
        unknown_ok=int(a[4 * b]),
        unknown_defect=int(a[4 * b + 1]),
    )


def read_feedback(source: FeedbackSource, cursor: int) -> tuple[ConfusionCounts, int]:
    """The feedback written after ``cursor``, as cells per model version, and the next cursor. A
    cursor beyond the store's log (the store was replaced by a fresh file) starts again at 0."""
    if cursor > (head := source.log_position()):
        log.warning(
            "feedback log at %d is behind the telemetry's cursor %d (a new store): counting from 0", head, cursor
        )
        cursor = 0
    return source.confusion_since(cursor, cell=_cell_key)
