"""The updater's state machine, pure: no I/O, no clock, no threads. Unit-tested without a broker.

    IDLE ─offer─▶ DOWNLOADING ─▶ VERIFIED ─▶ STAGED ─▶ TRIAL ─▶ COMMITTED
                      │              │          │        └────▶ ROLLED_BACK
                      └──────────────┴──────────┴─reject─▶ IDLE (the current model never stopped)

IDLE, COMMITTED and ROLLED_BACK are resting states: nothing in progress, a new offer may start.
The :class:`Record` is what survives a crash (the driver persists it atomically after every
transition); :func:`recover` says how to resume from each state after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from edge_agent.errors import EdgeAgentError, EdgelineError, UpdateRejected
from edge_agent.identity import DeviceIdentity
from edgeline.core.protocol.delivery import EventKind, LastEvent, ModelRef, Reason, UpdaterState
from edgeline.core.protocol.manifest import Manifest

Slot = Literal["A", "B"]
S = UpdaterState
RESTING = frozenset({S.IDLE, S.COMMITTED, S.ROLLED_BACK})
IN_FLIGHT = frozenset({S.DOWNLOADING, S.VERIFIED, S.STAGED})

ALLOWED: dict[UpdaterState, frozenset[UpdaterState]] = {
    S.IDLE: frozenset({S.DOWNLOADING}),
    S.COMMITTED: frozenset({S.DOWNLOADING}),
    S.ROLLED_BACK: frozenset({S.DOWNLOADING}),
    S.DOWNLOADING: frozenset({S.VERIFIED, S.IDLE}),
    # back to DOWNLOADING only when a restart finds the verified file no longer intact (power cut
    # before it reached the disk): the chunks that are intact are kept
    S.VERIFIED: frozenset({S.STAGED, S.IDLE, S.DOWNLOADING}),
    S.STAGED: frozenset({S.TRIAL, S.IDLE}),
    S.TRIAL: frozenset({S.COMMITTED, S.ROLLED_BACK}),
}


class IllegalTransition(EdgeAgentError):
    """A driver bug: a transition the state machine does not allow."""


@dataclass(frozen=True)
class SlotInfo:
    name: str
    version: int
    sha256: str
    sequence: int

    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version, sha256=self.sha256)


@dataclass(frozen=True)
class Pending:
    """The deployment in progress."""

    sequence: int
    name: str
    version: int
    sha256: str
    size: int
    slot: Slot
    filename: str = "model.onnx"
    started_at: float = 0.0
    trial_started_at: float = 0.0
    #: the signed desired-state envelope, kept to resume after a restart
    envelope: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version, sha256=self.sha256)


@dataclass(frozen=True)
class Record:
    state: UpdaterState = S.IDLE
    #: the committed slot (serving, unless a trial is running)
    active: Slot | None = None
    slots: dict[str, SlotInfo | None] = field(default_factory=lambda: {"A": None, "B": None})
    pending: Pending | None = None
    #: highest deployment sequence accepted: anything at or below is a replay
    sequence: int = 0
    last: LastEvent | None = None
    last_error: str = ""

    @property
    def active_info(self) -> SlotInfo | None:
        return self.slots.get(self.active) if self.active else None

    # -- persistence form ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "edgeline.updater/1",
            "state": self.state.value,
            "active": self.active,
            "slots": {k: (vars(v) if v else None) for k, v in self.slots.items()},
            "pending": vars(self.pending) if self.pending else None,
            "sequence": self.sequence,
            "last": self.last.model_dump(mode="json") if self.last else None,
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        try:
            if data.get("schema") != "edgeline.updater/1":
                raise ValueError(f"unknown schema {data.get('schema')!r}")
            slots = {k: (SlotInfo(**v) if v else None) for k, v in dict(data["slots"]).items()}
            if set(slots) != {"A", "B"}:
                raise ValueError("slots must be A and B")
            active = data["active"]
            if active not in (None, "A", "B"):
                raise ValueError(f"bad active slot {active!r}")
            return cls(
                state=UpdaterState(data["state"]),
                active=active,
                slots=slots,
                pending=Pending(**data["pending"]) if data.get("pending") else None,
                sequence=int(data["sequence"]),
                last=LastEvent.model_validate(data["last"]) if data.get("last") else None,
                last_error=str(data.get("last_error", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgelineError(f"updater state is malformed: {exc}") from exc


#: the device's identity (one definition: :class:`edge_agent.identity.DeviceIdentity`)
Identity = DeviceIdentity


@dataclass(frozen=True)
class Limits:
    max_artifact_bytes: int
    min_free_bytes: int


class OfferOutcome(StrEnum):
    START = "start"  # begin downloading
    ALREADY_ACTIVE = "already_active"  # the model is already serving: record the sequence, report committed
    IGNORE = "ignore"  # the same deployment again (retained redelivery): nothing to do


def pending_of(manifest: Manifest, slot: Slot = "A") -> Pending:
    """A Pending describing ``manifest`` (for events about an offer that never started)."""
    art = manifest.artifact
    return Pending(manifest.sequence, manifest.name, manifest.version, art.sha256, art.size, slot, art.filename)


def _other(slot: Slot | None) -> Slot:
    return "B" if slot == "A" else "A"


def check_target(manifest: Manifest, me: DeviceIdentity) -> None:
    """Raise :class:`UpdateRejected` unless the manifest is meant for this device."""
    t = manifest.target
    if t.devices and me.device_id not in t.devices:
        raise UpdateRejected(Reason.WRONG_TARGET, f"manifest is for devices {list(t.devices)[:5]}")
    if t.groups and not set(t.groups) & set(me.groups):
        raise UpdateRejected(Reason.WRONG_TARGET, f"manifest is for groups {list(t.groups)[:5]}")
    if t.hardware_classes and me.hardware_class not in t.hardware_classes:
        raise UpdateRejected(
            Reason.WRONG_HARDWARE, f"manifest is for {list(t.hardware_classes)}, this is {me.hardware_class!r}"
        )


def check_sequence(rec: Record, manifest: Manifest) -> OfferOutcome | None:
    """IGNORE for the deployment already accepted (the same sequence for the same artifact: a retained
    redelivery); raise REPLAY for anything at or below the last accepted sequence; None when new."""
    known = {i.sha256 for i in (rec.pending, rec.active_info) if i is not None}
    if manifest.sequence == rec.sequence and rec.sequence > 0 and manifest.artifact.sha256 in known:
        return OfferOutcome.IGNORE
    if manifest.sequence <= rec.sequence:
        raise UpdateRejected(Reason.REPLAY, f"sequence {manifest.sequence} <= last accepted {rec.sequence}")
    return None


def check_policy(rec: Record, manifest: Manifest, *, now: float, limits: Limits, free_bytes: int) -> OfferOutcome:
    """Checks after the sequence was accepted: expiry, downgrade, size, disk."""
    if manifest.is_expired(now):
        raise UpdateRejected(Reason.EXPIRED, f"manifest expired at {manifest.expires_at:.0f}, now {now:.0f}")
    current = rec.active_info
    art = manifest.artifact
    if current is not None and current.sha256 == art.sha256:
        return OfferOutcome.ALREADY_ACTIVE
    if (
        current is not None
        and current.name == manifest.name
        and manifest.version <= current.version
        and not manifest.allow_downgrade
    ):
        raise UpdateRejected(
            Reason.DOWNGRADE,
            f"{manifest.name} v{manifest.version} is not above the running v{current.version} "
            "and the manifest does not allow a downgrade",
        )
    if art.size > limits.max_artifact_bytes:
        raise UpdateRejected(
            Reason.OVERSIZE, f"artifact of {art.size} bytes exceeds the limit of {limits.max_artifact_bytes}"
        )
    if free_bytes - art.size < limits.min_free_bytes:
        raise UpdateRejected(
            Reason.DISK_FULL,
            f"{free_bytes} bytes free; {art.size} needed plus a reserve of {limits.min_free_bytes}",
        )
    return OfferOutcome.START


def accept_sequence(rec: Record, manifest: Manifest) -> Record:
    return replace(rec, sequence=max(rec.sequence, manifest.sequence))


def _move(rec: Record, to: UpdaterState, **changes: Any) -> Record:
    if to not in ALLOWED.get(rec.state, frozenset()):
        raise IllegalTransition(f"updater cannot go from {rec.state} to {to}")
    return replace(rec, state=to, **changes)


def begin(rec: Record, manifest: Manifest, now: float, envelope: dict[str, Any] | None = None) -> Record:
    """A resting machine takes an accepted offer: DOWNLOADING into the inactive slot."""
    pending = Pending(
        sequence=manifest.sequence,
        name=manifest.name,
        version=manifest.version,
        sha256=manifest.artifact.sha256,
        size=manifest.artifact.size,
        slot=_other(rec.active),
        filename=manifest.artifact.filename,
        started_at=now,
        envelope=envelope or {},
    )
    last = LastEvent(kind=EventKind.DOWNLOADING, sequence=manifest.sequence, ts=now)
    return _move(rec, S.DOWNLOADING, pending=pending, last=last, last_error="")


def verified(rec: Record, now: float) -> Record:
    return _move(rec, S.VERIFIED, last=_last(rec, EventKind.VERIFIED, now))


def reverify_failed(rec: Record, now: float) -> Record:
    """After a restart the VERIFIED file did not verify again: download what is missing."""
    return _move(rec, S.DOWNLOADING, last=_last(rec, EventKind.DOWNLOADING, now))


def staged(rec: Record, now: float) -> Record:
    """The artifact sits in the target slot: that slot now holds the new model (not yet trusted)."""
    p = _need_pending(rec)
    slots = dict(rec.slots)
    slots[p.slot] = SlotInfo(p.name, p.version, p.sha256, p.sequence)
    return _move(rec, S.STAGED, slots=slots, last=_last(rec, EventKind.STAGED, now))


def activated(rec: Record, now: float) -> Record:
    p = _need_pending(rec)
    return _move(rec, S.TRIAL, pending=replace(p, trial_started_at=now), last=_last(rec, EventKind.ACTIVATED, now))


def committed(rec: Record, now: float) -> Record:
    p = _need_pending(rec)
    return _move(rec, S.COMMITTED, active=p.slot, pending=None, last=_last(rec, EventKind.COMMITTED, now))


def rejected(rec: Record, reason: str, detail: str, now: float) -> Record:
    """Refuse the pending deployment before activation. A slot it was staged into is wiped from the
    record (its content is not trusted); the committed slot is untouched."""
    p = _need_pending(rec)
    slots = dict(rec.slots)
    if rec.state == S.STAGED:
        slots[p.slot] = None
    last = LastEvent(kind=EventKind.REJECTED, sequence=p.sequence, reason=reason, ts=now)
    return _move(rec, S.IDLE, slots=slots, pending=None, last=last, last_error=f"{reason}: {detail}"[:500])


def rolled_back(rec: Record, reason: str, detail: str, now: float) -> Record:
    """The trial failed: the committed slot serves again, the trial slot is forgotten."""
    p = _need_pending(rec)
    slots = dict(rec.slots)
    slots[p.slot] = None
    last = LastEvent(kind=EventKind.ROLLED_BACK, sequence=p.sequence, reason=reason, ts=now)
    return _move(rec, S.ROLLED_BACK, slots=slots, pending=None, last=last, last_error=f"{reason}: {detail}"[:500])


def refused_offer(rec: Record, sequence: int, reason: str, detail: str, now: float) -> Record:
    """Record a refusal that happened before anything started (the state does not change)."""
    last = LastEvent(kind=EventKind.REJECTED, sequence=sequence, reason=reason, ts=now)
    return replace(rec, last=last, last_error=f"{reason}: {detail}"[:500])


def already_active(rec: Record, manifest: Manifest, now: float) -> Record:
    last = LastEvent(kind=EventKind.COMMITTED, sequence=manifest.sequence, ts=now)
    return replace(accept_sequence(rec, manifest), last=last, last_error="")


def _last(rec: Record, kind: EventKind, now: float) -> LastEvent:
    return LastEvent(kind=kind, sequence=rec.pending.sequence if rec.pending else rec.sequence, ts=now)


def _need_pending(rec: Record) -> Pending:
    if rec.pending is None:
        raise IllegalTransition(f"no deployment in progress in state {rec.state}")
    return rec.pending


class Resume(StrEnum):
    NOTHING = "nothing"
    DOWNLOAD = "download"
    STAGE = "stage"
    LOAD = "load"


@dataclass(frozen=True)
class Recovery:
    record: Record
    resume: Resume
    #: set when the restart itself rolled back a trial (publish a rolled_back event)
    rolled_back: bool = False


def recover(rec: Record, now: float) -> Recovery:
    """After a restart the committed slot serves first, always. Then: an interrupted download,
    verification or staging resumes; an interrupted trial is rolled back (fail closed: the new model
    may be what killed the agent)."""
    if rec.state == S.TRIAL:
        return Recovery(
            rolled_back(rec, Reason.CRASHED, "the agent restarted during the trial", now), Resume.NOTHING, True
        )
    resume = {S.DOWNLOADING: Resume.DOWNLOAD, S.VERIFIED: Resume.STAGE, S.STAGED: Resume.LOAD}.get(
        rec.state, Resume.NOTHING
    )
    return Recovery(rec, resume)
