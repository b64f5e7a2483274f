"""How the updater tells the world: events (through an :class:`EventPublisher`), the retained device
state (through the link), and the injected fault points of ``[updater.faults]``."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
from pathlib import Path

from edge_agent.model import LoadedModel
from edge_agent.updater import machine as m
from edge_agent.updater.events import EventPublisher
from edge_agent.updater.link import UpdaterLink
from edgeline.core.fsutil import write_atomic
from edgeline.core.protocol.delivery import DeviceEvent, EventKind, LastEvent, ModelRef
from edgeline.core.protocol.delivery import UpdaterState as S
from firmware_configs.updater_section import FaultSection

log = logging.getLogger(__name__)

FAULT_MARKER = "fault-hit"


def transition_event_id(device_id: str, last: LastEvent) -> str:
    """Idempotency key of the event reporting the transition ``last`` (the record's last event): the
    same before and after a restart, so the event can be sent again safely when a power cut came
    between persisting the transition and storing its event."""
    raw = f"{device_id}|{last.sequence}|{last.kind.value}|{last.reason}|{last.ts!r}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


class Reporter:
    def __init__(
        self,
        device_id: str,
        link: UpdaterLink,
        events: EventPublisher,
        state_dir: Path,
        faults: FaultSection,
        stop: threading.Event,
    ) -> None:
        self.device_id = device_id
        self.link = link
        self.events = events
        self.state_dir = state_dir
        self.faults = faults
        self._stop = stop

    def emit(
        self,
        kind: EventKind,
        rec: m.Record,
        p: m.Pending | None,
        reason: str = "",
        detail: str = "",
        *,
        sequence: int | None = None,
        timings: dict[str, float] | None = None,
        progress: dict[str, int] | None = None,
    ) -> None:
        seq = sequence if sequence is not None else (p.sequence if p else rec.sequence)
        last = rec.last
        # the event of the record's last transition gets a stable id; progress reports get their own
        same = last is not None and last.kind == kind and last.sequence == seq and not progress
        ids = {"event_id": transition_event_id(self.device_id, last)} if same and last is not None else {}
        event = DeviceEvent(
            **ids,
            device_id=self.device_id,
            kind=kind,
            state=rec.state,
            sequence=seq,
            model=p.ref() if p else None,
            reason=str(reason),
            detail=detail[:2000],
            timings=timings or {},
            progress=progress or {},
        )
        try:
            self.events.publish_event(event)
        except Exception:
            log.exception("event publisher failed for %s", kind)

    def report(
        self, rec: m.Record, model: LoadedModel | None, counts: dict[str, float | int | str] | None = None
    ) -> None:
        """Update the retained device state: the serving model, its slot, the updater's state (and
        ``counts``, e.g. the refusals, in the state's ``extra``)."""
        ref = None
        if model is not None:
            man = model.manifest
            ref = ModelRef(name=man.name, version=man.version, sha256=man.artifact.sha256)
        serving = rec.pending.slot if rec.state == S.TRIAL and rec.pending else rec.active
        self.link.update_state(
            model=ref,
            slot=serving if model else None,
            updater=rec.state,
            sequence=rec.sequence,
            health="ok" if model else "no_model",
            last_event=rec.last,
            last_error=rec.last_error,
            **({"extra": dict(counts)} if counts else {}),
        )

    def fault(self, state: S) -> None:
        """Injected faults, right after ``state`` was persisted."""
        f = self.faults
        if f.crash_at == state.value:
            log.warning("fault injection: SIGKILL in state %s", state)
            self.marker(state.value)
            os.kill(os.getpid(), signal.SIGKILL)
        if f.pause_at == state.value:
            log.warning("fault injection: paused in state %s for %.0f s", state, f.pause_s)
            self.marker(state.value)
            self._stop.wait(f.pause_s)

    def marker(self, point: str) -> None:
        """Tell a test harness where the injected fault holds the updater (``<state_dir>/fault-hit``)."""
        write_atomic(self.state_dir / FAULT_MARKER, point.encode())
