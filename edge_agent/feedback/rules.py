"""The rules of feedback, pure (no I/O): what a request may say, what truth may be given for a result,
and the confusion counts a stretch of the feedback log adds up to.

A feedback names ONE result, by ``result_id`` (any result that has one: every triggered result) or by
``part_id`` (the most recent result of that part), and gives its ``truth``: ``ok``, ``defect`` or a
class label of the model that gave the verdict (its ok label counts as ``ok``). ``by`` says who, in a
small alphabet (letters, digits, space and ``. _ @ ' -``, at most :data:`MAX_BY` characters), so a
name never carries markup, a control character or a statement separator into a page, a log or a query.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent.errors import EdgeAgentError

#: the largest feedback request (JSON), on every channel
MAX_REQUEST_BYTES = 2048
MAX_BY = 64
MAX_ID = 128
#: the fields of one indexed result (and the copy a feedback row keeps of the verdict it corrects)
RESULT_FIELDS: tuple[str, ...] = (
    "result_id",
    "part_id",
    "verdict",
    "label",
    "confidence",
    "model",
    "model_version",
    "state",
    "ts",
)
#: the fields of one feedback row beyond the result's
FEEDBACK_FIELDS: tuple[str, ...] = ("truth", "source", "by", "given_at", "replaced")
#: the channels feedback comes through
SOURCES: frozenset[str] = frozenset({"api", "station", "mqtt", "opcua", "modbus", "tcp"})
#: the truths any result takes; a class label of the result's model is the other kind
BASIC_TRUTHS: frozenset[str] = frozenset({"ok", "defect"})

_ID = re.compile(r"[\x21-\x7e]{1,128}")
_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BY = re.compile(r"[\w .@'-]{0,64}")
_REQUEST_FIELDS = frozenset({"result_id", "part_id", "truth", "by", "ref"})


class FeedbackError(EdgeAgentError):
    """A feedback refused; ``reason`` says why (``bad_request``, ``bad_truth``, ``bad_by``,
    ``unknown_result``, ``unknown_part``, ``no_verdict``, ``too_large``, ``store``)."""

    default_reason = "bad_request"


@dataclass(frozen=True, slots=True)
class FeedbackRequest:
    truth: str
    result_id: str = ""
    part_id: str = ""
    by: str = ""
    #: the caller's own reference, echoed in the answer (MQTT); never stored
    ref: str = ""


@dataclass(frozen=True, slots=True)
class ModelLabels:
    """What the index knows of the model behind a result: its labels and its ok label."""

    labels: tuple[str, ...]
    ok_label: str


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise FeedbackError(
            f"{what} must be 1 to {MAX_ID} printable ASCII characters without spaces, got {str(value)[:80]!r}"
        )
    return value


def check_by(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or not _BY.fullmatch(value) or value != value.strip():
        raise FeedbackError(
            f"by must be up to {MAX_BY} letters, digits, spaces or . _ @ ' - (no leading or trailing space), "
            f"got {str(value)[:80]!r}",
            reason="bad_by",
        )
    return value


def check_truth_text(value: Any) -> str:
    """The truth's spelling (before the result's model is known)."""
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise FeedbackError(
            f"truth must be ok, defect or a class label (letters, digits, _ . -), got {str(value)[:80]!r}",
            reason="bad_truth",
        )
    if value == "unknown":
        raise FeedbackError("truth 'unknown' says nothing: give ok, defect or the class", reason="bad_truth")
    return value


def parse_request(body: bytes) -> FeedbackRequest:
    """A JSON feedback (the local API, the line's MQTT topic): ``{"result_id" | "part_id", "truth", "by"}``."""
    if len(body) > MAX_REQUEST_BYTES:
        raise FeedbackError(
            f"a feedback is a small JSON object (at most {MAX_REQUEST_BYTES} bytes)", reason="too_large"
        )
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedbackError(f"the feedback is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise FeedbackError("the feedback must be a JSON object")
    return request_of(doc)


def request_of(doc: Mapping[str, Any]) -> FeedbackRequest:
    unknown = sorted(set(doc) - _REQUEST_FIELDS)
    if unknown:
        raise FeedbackError(
            f"unknown field(s) {', '.join(repr(u[:40]) for u in unknown)}; a feedback has "
            f"{', '.join(sorted(_REQUEST_FIELDS))}"
        )
    rid, part = doc.get("result_id") or "", doc.get("part_id") or ""
    if bool(rid) == bool(part):
        raise FeedbackError("name the result by exactly one of result_id and part_id")
    if "truth" not in doc:
        raise FeedbackError("truth is required: ok, defect or a class label", reason="bad_truth")
    ref = doc.get("ref") or ""
    return FeedbackRequest(
        truth=check_truth_text(doc["truth"]),
        result_id=check_id(rid, "result_id") if rid else "",
        part_id=check_id(part, "part_id") if part else "",
        by=check_by(doc.get("by")),
        ref=check_id(ref, "ref")[:64] if ref else "",
    )


def resolve_truth(truth: str, verdict: str | None, model: ModelLabels | None) -> str:
    """The truth as stored, for a result with ``verdict`` from ``model`` (None: labels unknown).
    ``confirm`` takes the verdict itself; the model's ok label is stored as ``ok``."""
    if verdict is None:
        raise FeedbackError("the result has no verdict to correct (missed, refused or error)", reason="no_verdict")
    if truth == "confirm":
        if verdict not in BASIC_TRUTHS:
            raise FeedbackError(
                f"a verdict {verdict!r} cannot be confirmed: give ok, defect or the class", reason="bad_truth"
            )
        return verdict
    if truth in BASIC_TRUTHS:
        return truth
    if model is None:
        return truth
    if truth == model.ok_label:
        return "ok"
    if truth not in model.labels:
        raise FeedbackError(
            f"truth {truth!r} is not ok, defect or a class of the model ({', '.join(model.labels)})",
            reason="bad_truth",
        )
    return truth


# -- the confusion counts (for the telemetry windows) ---------------------------------------------------
ModelKey = tuple[str, int]
Pair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One write of the feedback log: a result's truth set (``prev`` is what it replaced, or None)."""

    seq: int
    result_id: str
    model: str
    model_version: int
    verdict: str
    truth: str
    prev: str | None
    #: the confidence of the verdict (None: not known), for cells by defect score
    confidence: float | None = None


@dataclass
class ConfusionCounts:
    """(verdict, truth) pairs per model version over a stretch of the log. A feedback replaced after it
    was counted is ``retracted`` (its old pair) and ``added`` (its new one); the net of consecutive
    stretches adds up to the stored rows. ``gap``: the log no longer held the start of the stretch."""

    added: dict[ModelKey, Counter[Pair]] = field(default_factory=dict)
    retracted: dict[ModelKey, Counter[Pair]] = field(default_factory=dict)
    gap: bool = False

    def net(self) -> dict[ModelKey, Counter[Pair]]:
        out: dict[ModelKey, Counter[Pair]] = {}
        for key in {*self.added, *self.retracted}:
            c: Counter[Pair] = Counter(self.added.get(key, Counter()))
            c.subtract(self.retracted.get(key, Counter()))
            kept = Counter({p: n for p, n in c.items() if n})
            if kept:
                out[key] = kept
        return out


def confusion(entries: Iterable[LogEntry], cell: Callable[[LogEntry, str], Pair] | None = None) -> ConfusionCounts:
    """The counts a stretch of the log (in ``seq`` order) adds: per result, the truth it had before the
    stretch (the first entry's ``prev``) against the truth it has after (the last entry's). ``cell``
    names the counted pair of an entry and a truth (default ``(verdict, truth)``)."""
    pair = cell or _verdict_truth
    first: dict[str, LogEntry] = {}
    last: dict[str, LogEntry] = {}
    for e in entries:
        first.setdefault(e.result_id, e)
        last[e.result_id] = e
    out = ConfusionCounts()
    for rid, end in last.items():
        before = first[rid].prev
        if before == end.truth:
            continue
        key = (end.model, end.model_version)
        if before is not None:
            out.retracted.setdefault(key, Counter())[pair(end, before)] += 1
        out.added.setdefault(key, Counter())[pair(end, end.truth)] += 1
    return out


def _verdict_truth(entry: LogEntry, truth: str) -> Pair:
    return (entry.verdict, truth)
