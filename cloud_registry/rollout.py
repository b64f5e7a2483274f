"""The rollout engine, pure: waves, canary, failure threshold, pause/resume/abort and rollback.

No I/O, no clock of its own: the runner feeds observations (device events and states) and executes
the returned actions (publish a desired state, publish a rollback). Every function returns the new
:class:`Rollout` and a list of actions; the rollout is plain data, stored as JSON.

Rules:
* Wave *n+1* is dispatched only when every device of wave *n* has COMMITTED or FAILED. A device that
  is offline keeps its wave waiting: its desired state is retained on the broker, so it converges
  when it returns.
* Any failure in the canary wave, or failures above ``max_failure_pct`` of all devices, aborts.
* Abort (and rollback) sends every device that was dispatched back to the model it ran before,
  as a new signed deployment with ``allow_downgrade``; devices not dispatched yet are skipped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from edgeline.core.protocol import model_ref


class RolloutStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"


class DeviceStatus(StrEnum):
    PENDING = "pending"  # in a later wave
    SENT = "sent"  # desired state published
    UPDATING = "updating"  # the device reported progress
    COMMITTED = "committed"
    FAILED = "failed"  # rejected, or rolled back by the device's own trial
    ROLLING_BACK = "rolling_back"  # the previous model was sent back
    ROLLED_BACK = "rolled_back"  # the device confirmed its previous model
    SKIPPED = "skipped"  # never dispatched (the rollout stopped first)


DONE = frozenset({DeviceStatus.COMMITTED, DeviceStatus.FAILED})
TERMINAL_ROLLOUT = frozenset({RolloutStatus.COMPLETED, RolloutStatus.ABORTED})


@dataclass(frozen=True)
class ModelRef:
    """The rollout's copy of the protocol's :class:`~edgeline.core.protocol.model_ref.ModelRef` (the
    same name, version and sha256), a frozen dataclass like the rest of the rollout: built
    positionally and stored with ``asdict``, neither of which the pydantic model allows."""

    name: str
    version: int
    sha256: str

    @classmethod
    def of(cls, ref: model_ref.ModelRef) -> ModelRef:
        return cls(ref.name, ref.version, ref.sha256)


@dataclass(frozen=True)
class DeviceTrack:
    device_id: str
    wave: int
    status: DeviceStatus = DeviceStatus.PENDING
    sequence: int = 0
    previous: ModelRef | None = None
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    id: str
    model: ModelRef
    target: str
    waves: tuple[tuple[str, ...], ...]
    canary: int = 0
    max_failure_pct: float = 0.0
    allow_downgrade: bool = False


@dataclass(frozen=True)
class Rollout:
    plan: Plan
    status: RolloutStatus = RolloutStatus.RUNNING
    wave: int = 0
    devices: dict[str, DeviceTrack] = field(default_factory=dict)
    reason: str = ""
    log: tuple[str, ...] = ()

    # -- summaries -------------------------------------------------------------------------------
    def count(self, *statuses: DeviceStatus) -> int:
        return sum(1 for d in self.devices.values() if d.status in statuses)

    @property
    def settled(self) -> bool:
        """Nothing more will happen: terminal, and every rollback confirmed."""
        return self.status in TERMINAL_ROLLOUT and self.count(DeviceStatus.ROLLING_BACK) == 0

    # -- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rollout:
        p = d["plan"]
        plan = Plan(
            id=p["id"],
            model=ModelRef(**p["model"]),
            target=p["target"],
            waves=tuple(tuple(w) for w in p["waves"]),
            canary=int(p["canary"]),
            max_failure_pct=float(p["max_failure_pct"]),
            allow_downgrade=bool(p["allow_downgrade"]),
        )
        devices = {
            k: DeviceTrack(
                device_id=v["device_id"],
                wave=int(v["wave"]),
                status=DeviceStatus(v["status"]),
                sequence=int(v["sequence"]),
                previous=ModelRef(**v["previous"]) if v.get("previous") else None,
                reason=v.get("reason", ""),
            )
            for k, v in d["devices"].items()
        }
        return cls(
            plan, RolloutStatus(d["status"]), int(d["wave"]), devices, d.get("reason", ""), tuple(d.get("log", ()))
        )


# -- actions ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dispatch:
    device_id: str


@dataclass(frozen=True)
class SendBack:
    """Send the device back to ``previous`` (or clear its desired state when there is none)."""

    device_id: str
    previous: ModelRef | None


Action = Dispatch | SendBack


@dataclass(frozen=True)
class Observation:
    """What a device said: an event kind (or ``state``), the model it runs, the deployment sequence."""

    device_id: str
    kind: str  # downloading|verified|staged|activated|committed|rejected|rolled_back|state
    sequence: int
    sha256: str | None = None
    reason: str = ""


# -- planning ------------------------------------------------------------------------------------
def parse_waves(spec: str) -> list[float]:
    """``"10%,50%,100%"`` or ``"1,5,all"``: cumulative sizes. Percentages return fractions (0-1],
    counts return negative numbers (-n) so :func:`plan_waves` can tell them apart."""
    out: list[float] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "all":
            out.append(1.0)
        elif part.endswith("%"):
            pct = float(part[:-1])
            if not 0 < pct <= 100:
                raise ValueError(f"wave {part!r} must be between 0% and 100%")
            out.append(pct / 100.0)
        else:
            n = int(part)
            if n < 1:
                raise ValueError(f"wave {part!r} must be at least 1 device")
            out.append(-float(n))
    if not out:
        raise ValueError("no waves given")
    return out


def plan_waves(devices: list[str], *, canary: int = 0, waves: str = "100%") -> tuple[tuple[str, ...], ...]:
    """Split ``devices`` (in order) into waves: the first ``canary`` devices alone, then cumulative
    wave sizes from ``waves``; whatever remains goes into a final wave."""
    if canary < 0 or canary > len(devices):
        raise ValueError(f"canary {canary} is outside 0..{len(devices)}")
    out: list[tuple[str, ...]] = []
    if canary:
        out.append(tuple(devices[:canary]))
    done = canary
    for size in parse_waves(waves):
        upto = min(len(devices), int(-size) if size < 0 else math.ceil(size * len(devices)))
        if upto > done:
            out.append(tuple(devices[done:upto]))
            done = upto
    if done < len(devices):
        out.append(tuple(devices[done:]))
    return tuple(w for w in out if w)


def start(plan: Plan, previous: dict[str, ModelRef | None]) -> tuple[Rollout, list[Action]]:
    if not plan.waves or not any(plan.waves):
        raise ValueError("a rollout needs at least one device")
    devices = {d: DeviceTrack(d, i, previous=previous.get(d)) for i, wave in enumerate(plan.waves) for d in wave}
    r = Rollout(plan, devices=devices, log=("started",))
    return _dispatch_wave(r, 0)


def _dispatch_wave(r: Rollout, wave: int) -> tuple[Rollout, list[Action]]:
    devices = dict(r.devices)
    actions: list[Action] = []
    for d in r.plan.waves[wave]:
        if devices[d].status == DeviceStatus.PENDING:
            devices[d] = replace(devices[d], status=DeviceStatus.SENT)
            actions.append(Dispatch(d))
    return replace(r, wave=wave, devices=devices, log=(*r.log, f"wave {wave + 1} dispatched")), actions


def dispatched(r: Rollout, device_id: str, sequence: int) -> Rollout:
    """The runner published the desired state with ``sequence``."""
    devices = dict(r.devices)
    devices[device_id] = replace(devices[device_id], sequence=sequence)
    return replace(r, devices=devices)


def observe(r: Rollout, obs: Observation) -> tuple[Rollout, list[Action]]:
    t = r.devices.get(obs.device_id)
    if t is None or t.sequence == 0 or obs.sequence < t.sequence:
        return r, []
    new = t
    target_sha = r.plan.model.sha256
    if t.status == DeviceStatus.ROLLING_BACK:
        back_sha = t.previous.sha256 if t.previous else None
        if obs.kind in ("committed", "state") and obs.sha256 is not None and obs.sha256 == back_sha:
            new = replace(t, status=DeviceStatus.ROLLED_BACK)
        elif obs.kind in ("rejected", "rolled_back") and obs.sequence == t.sequence:
            new = replace(t, status=DeviceStatus.ROLLED_BACK, reason=t.reason or obs.reason)
    elif t.status in (DeviceStatus.SENT, DeviceStatus.UPDATING, DeviceStatus.COMMITTED):
        if obs.kind in ("committed", "state") and obs.sha256 == target_sha:
            new = replace(t, status=DeviceStatus.COMMITTED)
        elif obs.kind in ("rejected", "rolled_back") and obs.sequence == t.sequence:
            new = replace(t, status=DeviceStatus.FAILED, reason=obs.reason or obs.kind)
        elif obs.kind in ("downloading", "verified", "staged", "activated") and t.status == DeviceStatus.SENT:
            new = replace(t, status=DeviceStatus.UPDATING)
    if new == t:
        return r, []
    devices = dict(r.devices)
    devices[obs.device_id] = new
    r = replace(r, devices=devices)
    if new.status == DeviceStatus.FAILED:
        r = replace(r, log=(*r.log, f"{obs.device_id} failed: {new.reason}"))
    return evaluate(r)


def evaluate(r: Rollout) -> tuple[Rollout, list[Action]]:
    if r.status != RolloutStatus.RUNNING:
        return r, []
    total = len(r.devices)
    failed = r.count(DeviceStatus.FAILED)
    wave_devices = [r.devices[d] for d in r.plan.waves[r.wave]]
    if r.plan.canary and r.wave == 0 and any(d.status == DeviceStatus.FAILED for d in wave_devices):
        return abort(r, "canary failed")
    if failed and 100.0 * failed / total > r.plan.max_failure_pct:
        return abort(r, f"{failed} of {total} devices failed (threshold {r.plan.max_failure_pct:g}%)")
    if not all(d.status in DONE for d in wave_devices):
        return r, []
    if r.wave + 1 < len(r.plan.waves):
        return _dispatch_wave(r, r.wave + 1)
    return replace(r, status=RolloutStatus.COMPLETED, log=(*r.log, "completed")), []


def pause(r: Rollout) -> tuple[Rollout, list[Action]]:
    if r.status != RolloutStatus.RUNNING:
        raise ValueError(f"cannot pause a rollout that is {r.status}")
    return replace(r, status=RolloutStatus.PAUSED, log=(*r.log, "paused")), []


def resume(r: Rollout) -> tuple[Rollout, list[Action]]:
    if r.status != RolloutStatus.PAUSED:
        raise ValueError(f"cannot resume a rollout that is {r.status}")
    return evaluate(replace(r, status=RolloutStatus.RUNNING, log=(*r.log, "resumed")))


def abort(r: Rollout, reason: str) -> tuple[Rollout, list[Action]]:
    """Stop and send every dispatched device back to its previous model. Also the way to roll back
    a completed rollout."""
    if r.status == RolloutStatus.ABORTED:
        raise ValueError("the rollout is already aborted")
    devices = dict(r.devices)
    actions: list[Action] = []
    for d, t in r.devices.items():
        if t.status == DeviceStatus.PENDING:
            devices[d] = replace(t, status=DeviceStatus.SKIPPED)
        elif t.status in (DeviceStatus.SENT, DeviceStatus.UPDATING, DeviceStatus.COMMITTED, DeviceStatus.FAILED):
            why = t.reason if t.status == DeviceStatus.FAILED else "aborted"
            devices[d] = replace(t, status=DeviceStatus.ROLLING_BACK, reason=why)
            actions.append(SendBack(d, t.previous))
    return replace(
        r, status=RolloutStatus.ABORTED, devices=devices, reason=reason, log=(*r.log, f"aborted: {reason}")
    ), actions


def sent_back(r: Rollout, device_id: str, sequence: int, cleared: bool) -> Rollout:
    """The runner published the rollback (or cleared the desired state when there was no previous
    model, which leaves nothing to wait for)."""
    devices = dict(r.devices)
    t = devices[device_id]
    devices[device_id] = replace(
        t, sequence=sequence, status=DeviceStatus.ROLLED_BACK if cleared else DeviceStatus.ROLLING_BACK
    )
    return replace(r, devices=devices)
