"""The updater's record and what the world hears of it: every transition is persisted atomically,
then reported in the retained device state and as an event. Refusals of hostile or broken offers are
rate limited (see :mod:`.refusals`); those held back are counted in the device state."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edge_agent.model import LoadedModel
from edge_agent.updater import machine as m
from edge_agent.updater.offer import Refusal
from edge_agent.updater.refusals import Decision, RefusalGate
from edge_agent.updater.reporter import Reporter
from edge_agent.updater.slots import SlotDisk
from edgeline.core.protocol.delivery import EventKind

log = logging.getLogger(__name__)

#: the device state is republished at most this often for refusals alone (a flood of them)
STATE_EVERY_S = 1.0

#: the events that carry the deployment's phase timings
_TIMED = (EventKind.COMMITTED, EventKind.ROLLED_BACK)


class RecordKeeper:
    def __init__(
        self,
        disk: SlotDisk,
        reporter: Reporter,
        clock: Callable[[], float],
        serving: Callable[[], LoadedModel | None],
    ) -> None:
        self.disk = disk
        self.reporter = reporter
        self.clock = clock
        self.serving = serving
        self.record = m.Record()
        self.refusals = RefusalGate()
        self._counts_dirty = False
        self._counts_at = 0.0

    @property
    def counts_dirty(self) -> bool:
        """Refusals held back by the rate limit are not in the device state yet."""
        return self._counts_dirty

    def transition(
        self,
        rec: m.Record,
        kind: EventKind,
        *,
        pending: m.Pending | None = None,
        reason: str = "",
        detail: str = "",
        timings: dict[str, float] | None = None,
    ) -> None:
        self.commit(rec)
        kept = dict(timings or {}) if kind in _TIMED else {}
        self.emit(kind, pending or rec.pending, reason, detail, timings=kept)
        self.reporter.fault(rec.state)

    def commit(self, rec: m.Record, *, must_persist: bool = True) -> None:
        try:
            self.disk.save_record(rec)
        except OSError as exc:
            if must_persist:
                raise
            # a refusal changes no slot and no state (e.g. refused BECAUSE the disk is full): it is
            # reported now and persisted with the next change; lost at a restart, it is decided again
            log.error("updater record not saved (%s); the refusal is reported anyway", exc.strerror)
        self.record = rec
        self.report()

    def emit(self, kind: EventKind, p: m.Pending | None, reason: str = "", detail: str = "", **kw: Any) -> None:
        self.reporter.emit(kind, self.record, p, reason, detail, **kw)

    def refuse_once(self, r: Refusal) -> None:
        """A rejected event for each distinct refused payload, within the rate limit (see refusals.py);
        one held back by the limit is counted, and the count goes out with the next event sent."""
        decision = self.refusals.admit(r.key, r.reason)
        if decision is not Decision.REPORT:
            self._counts_dirty = decision is Decision.HELD or self._counts_dirty
            if decision is Decision.HELD and self.refusals.counts.unreported % 100 == 1:
                log.warning("refusals over the rate limit: %d not reported so far", self.refusals.counts.unreported)
            return
        detail = r.detail
        if held := self.refusals.take_held():
            detail = f"{detail} ({held} more refusals since the last report were not sent: rate limit)"
        log.warning("update rejected: %s: %s", r.reason, detail)
        self.commit(m.refused_offer(self.record, r.sequence, r.reason, detail, self.clock()), must_persist=False)
        self.emit(EventKind.REJECTED, None, r.reason, detail, sequence=r.sequence)

    def report_counts(self) -> None:
        """The refusal counts into the device state, at most every STATE_EVERY_S under a flood."""
        if self._counts_dirty and time.monotonic() - self._counts_at >= STATE_EVERY_S:
            self.report()

    def report(self) -> None:
        self._counts_dirty, self._counts_at = False, time.monotonic()
        self.reporter.report(self.record, self.serving(), self.refusals.counts.as_state())

    def resend_last(self, rec: m.Record) -> None:
        """A power cut may fall between persisting a transition and storing its event: send the event
        of the record's last transition again, under the same idempotency key (a copy that did go out
        is deduplicated by the outbox or by the receiver)."""
        last = rec.last
        if last is None:
            return
        p = rec.pending if rec.pending is not None and rec.pending.sequence == last.sequence else None
        info = rec.active_info
        if p is None and info is not None and info.sequence == last.sequence and rec.active is not None:
            p = m.Pending(info.sequence, info.name, info.version, info.sha256, 0, rec.active)
        self.reporter.emit(last.kind, rec, p, last.reason, "sent again after a restart", sequence=last.sequence)
