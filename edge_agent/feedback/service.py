"""The one entry every feedback channel calls (:meth:`FeedbackService.submit`), and the result bus's
outlet that keeps the recent-results index (triggered results, and free-run verdicts while
feedback is on) (:meth:`FeedbackService.write`, on the outlet's own thread).

A feedback that comes right after its result (a downstream check answering the results topic) may
arrive before the outlet indexed it: a result not found is looked up again once the outlet has caught
up (at most :data:`CATCH_UP_S`). A channel never sees an exception: a refusal comes back as an
:class:`Answer` with its reason, counted per channel and reason; a failure of the store itself (disk
full, I/O) is an answer with the reason ``store``, logged each time; other refusals the 1st, then every
100th."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.feedback.rules import SOURCES, FeedbackError, FeedbackRequest
from edge_agent.feedback.store import FeedbackStore, Stored

log = logging.getLogger(__name__)

#: how long a feedback naming a result not indexed yet waits for the outlet to catch up
CATCH_UP_S = 0.5
#: (name, version, labels, ok label) of the model serving now, or None
ModelOf = Callable[[], "tuple[str, int, tuple[str, ...], str] | None"]


@dataclass(frozen=True, slots=True)
class Answer:
    """A channel's answer: ``stored`` (with what was stored), or refused with ``reason`` and ``error``."""

    stored: Stored | None = None
    reason: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.stored is not None

    def doc(self) -> dict[str, Any]:
        """The answer as JSON (the local API, the line's MQTT broker)."""
        s = self.stored
        if s is None:
            return {"ok": False, "reason": self.reason, "error": self.error}
        return {
            "ok": True,
            "result_id": s.result_id,
            "part_id": s.part_id,
            "verdict": s.verdict,
            "truth": s.truth,
            "previous": s.previous,
            "replaced": s.replaced,
        }


class FeedbackService:
    """Also a result-bus outlet (``name``, ``write``, ``close``): it indexes every triggered result."""

    name = "feedback"

    def __init__(self, store: FeedbackStore, model_of: ModelOf = lambda: None) -> None:
        self.store = store
        self._model_of = model_of
        self._lock = threading.Lock()
        self.accepted: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.indexed = 0
        #: the bus outlet feeding the index (set by :func:`attach`), waited for when a result is not found
        self.outlet: Any = None

    @classmethod
    def open(cls, config: Any, model_of: ModelOf = lambda: None) -> FeedbackService:
        """The service of a device config (``[feedback]``; the file at ``config.feedback_path``)."""
        section = config.feedback
        store = FeedbackStore(
            Path(config.feedback_path), keep_results=section.keep_results, max_feedback=section.max_feedback
        )
        return cls(store, model_of)

    # -- the channels ------------------------------------------------------------------------------------
    def submit(self, req: FeedbackRequest, source: str) -> Answer:
        assert source in SOURCES, source
        try:
            try:
                stored = self.store.give(req, source)
            except FeedbackError as exc:
                outlet = self.outlet
                if exc.reason not in ("unknown_result", "unknown_part") or outlet is None or outlet.idle():
                    raise
                outlet.wait_idle(CATCH_UP_S)
                stored = self.store.give(req, source)
        except FeedbackError as exc:
            return self._refused(source, exc.reason, str(exc))
        except Exception as exc:  # never let a store bug take a channel down
            log.exception("feedback store failed")
            return self._refused(source, "store", f"the feedback store failed: {type(exc).__name__}")
        with self._lock:
            self.accepted[source] += 1
        log.info(
            "feedback via %s: %s (part %s) %s -> %s%s",
            source,
            stored.result_id,
            stored.part_id,
            stored.verdict,
            stored.truth,
            f" (replaces {stored.previous})" if stored.previous is not None else "",
        )
        return Answer(stored)

    def refuse(self, source: str, exc: FeedbackError) -> Answer:
        """A request a channel refused before it reached the store (bad JSON, oversized, bad fields)."""
        return self._refused(source, exc.reason, str(exc))

    def _refused(self, source: str, reason: str, error: str) -> Answer:
        with self._lock:
            self.refused[f"{source}.{reason}"] += 1
            n = sum(self.refused.values())
        if n == 1 or n % 100 == 0 or reason == "store":
            log.warning("feedback via %s refused (%s): %s (%d refused so far)", source, reason, error, n)
        return Answer(reason=reason, error=error)

    # -- the bus outlet (its own thread) -------------------------------------------------------------------
    def write(self, record: dict[str, Any]) -> None:
        self.write_batch([record])

    def write_batch(self, records: list[dict[str, Any]]) -> None:
        """Index the results among ``records`` that have a result id (one transaction): every triggered
        result, and free-run verdicts, which carry one while ``[feedback]`` is on (``<device>-<boot>-
        f<frame_id>``, set by the agent; no part id). Records without one are not indexed."""
        results = [r for r in records if r.get("type") == "verdict" and r.get("result_id")]
        if not results:
            return
        serving = self._model_of()
        if serving is not None and any(
            r.get("model") == serving[0] and r.get("model_version") == serving[1] for r in results
        ):
            self.store.note_model(*serving)
        self.indexed += self.store.add_results(results)

    def close(self) -> None:
        """The outlet's close; the store closes with :meth:`shutdown`."""

    def shutdown(self) -> None:
        self.store.close()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            accepted, refused = dict(self.accepted), dict(self.refused)
        out = {"accepted": accepted, "refused": refused, "indexed": self.indexed, "store": self.store.counters()}
        if self.outlet is not None:  # the index's outlet: offered, delivered, errors, dropped
            out["outlet"] = self.outlet.stats()
        return out


def serving_model(agent: Any) -> tuple[str, int, tuple[str, ...], str] | None:
    """(name, version, labels, ok label) of the model ``agent`` serves now, or None."""
    model = agent.current_model
    if model is None:
        return None
    m = model.manifest
    return str(m.name), int(m.version), tuple(m.labels), str(m.thresholds.ok_label)


def attach(agent: Any) -> tuple[FeedbackService, Any]:
    """Open ``agent``'s feedback service and put its index on the result bus, behind its own bounded
    queue like every outlet (a slow disk never holds up inspection). Returns (service, outlet)."""
    from edge_agent.sinks.base import SinkWorker

    service = FeedbackService.open(agent.config, lambda: serving_model(agent))
    outlet = SinkWorker(service, queue_size=4096, include="all", events=False)
    service.outlet = outlet
    outlet.start()
    agent.bus.add(outlet)
    return service, outlet
