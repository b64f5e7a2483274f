"""What the pages read from the registry store and the telemetry store, and what they show when a
store is unreachable: the last answer that came back, with its time and the error."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from cloud_registry import rollout as ro
from cloud_registry.errors import RegistryError
from cloud_registry.registry import Registry
from cloud_registry.store import ModelVersion
from cloud_registry.telemetry.store import TelemetryStore, open_telemetry_store
from edgeline.core.errors import EdgelineError

T = TypeVar("T")


@dataclass(frozen=True)
class Read(Generic[T]):
    """A value, when it was read (``at``), and the error of the latest attempt if that one failed."""

    value: T
    at: float
    error: str = ""

    @property
    def stale(self) -> bool:
        return bool(self.error)


class Remembered:
    """Last good answers by key: a failed read returns the previous value with the failure."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[Any, float]] = {}

    def read(self, key: str, fn: Callable[[], T], default: T) -> Read[T]:
        try:
            value = fn()
        except (EdgelineError, OSError) as exc:
            with self._lock:
                last = self._last.get(key)
            if last is None:
                return Read(default, 0.0, str(exc))
            return Read(last[0], last[1], str(exc))
        now = self.clock()
        with self._lock:
            self._last[key] = (value, now)
        return Read(value, now)


@dataclass(frozen=True)
class RolloutItem:
    rollout: ro.Rollout
    created_at: float
    updated_at: float
    runner_alive: bool


def rollouts(reg: Registry, limit: int = 50) -> list[RolloutItem]:
    from cloud_registry.rollout_runner import runner_alive

    return [
        RolloutItem(ro.Rollout.from_dict(row.doc), row.created_at, row.updated_at, runner_alive(row))
        for row in reg.store.list_rollouts(limit)
    ]


def rollout(reg: Registry, rollout_id: str) -> RolloutItem:
    from cloud_registry.rollout_runner import runner_alive

    row = reg.store.get_rollout(rollout_id)
    return RolloutItem(ro.Rollout.from_dict(row.doc), row.created_at, row.updated_at, runner_alive(row))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    stages: dict[str, int]
    versions: list[ModelVersion]
    #: the build report files kept with each version (version -> kind -> sha256)
    reports: dict[int, dict[str, str]] = field(default_factory=dict)
    #: what each version's report.json says, in a few lines (version -> lines)
    report_notes: dict[int, list[str]] = field(default_factory=dict)


def models(reg: Registry) -> list[ModelInfo]:
    out = []
    for m in reg.store.list_models():
        reports = reg.store.build_reports(m.name)
        notes = {}
        for version, kinds in reports.items():
            if "json" in kinds:
                notes[version] = report_notes(reg, kinds["json"])
        out.append(ModelInfo(m.name, m.stages, reg.store.list_versions(m.name), reports, notes))
    return out


def report_notes(reg: Registry, sha256: str) -> list[str]:
    """Verdict, AUROC, gate failures and notes, warnings: the lines of a build's report.json worth a
    glance (both report shapes: the inspection build's and the classifier's)."""
    try:
        doc = json.loads(reg.artifacts.get(sha256))
    except (EdgelineError, ValueError) as exc:
        return [f"report unreadable: {exc}"]
    if not isinstance(doc, dict):
        return ["report unreadable: not an object"]
    lines = []
    if isinstance(doc.get("verdict"), str):
        lines.append(f"verdict: {doc['verdict']}")
    if isinstance(doc.get("auroc"), int | float):
        lines.append(f"AUROC (out of fold): {doc['auroc']:.4f}")
    ev = doc.get("evaluation")
    if isinstance(ev, dict) and isinstance(ev.get("accuracy"), int | float):
        lines.append(f"held-out accuracy: {ev['accuracy']:.4f}")
    gate_doc = doc.get("gate")
    if isinstance(gate_doc, dict):
        lines += [f"gate: {f}" for f in gate_doc.get("failures") or [] if isinstance(f, str)]
        lines += [f"note: {n}" for n in gate_doc.get("notes") or [] if isinstance(n, str)]
    lines += [f"warning: {w}" for w in doc.get("warnings") or [] if isinstance(w, str)]
    return lines[:20]


def gate(mv: ModelVersion) -> dict[str, Any]:
    """Escape and false reject (rate, held-out parts, 95% upper bound) as the build measured them."""
    out: dict[str, Any] = {}
    for key in ("escape", "false_reject"):
        n = int(mv.metrics.get(f"{key}_n", 0))
        if key in mv.metrics and n:
            out[key] = {"rate": mv.metrics[key], "n": n, "high": mv.metrics.get(f"{key}_high")}
    unverified = mv.envelope.get("body", {}).get("unverified") if isinstance(mv.envelope, dict) else None
    out["unverified"] = list(unverified or [])
    return out


# -- telemetry -------------------------------------------------------------------------------------------
def open_telemetry(url: str | Path) -> TelemetryStore | None:
    """The telemetry store at ``url`` (a path, ``sqlite:///...`` or ``postgresql://...``); None while
    a SQLite file does not exist yet (``edgeline ingest`` creates it)."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return open_telemetry_store(text)
    path = Path(text[len("sqlite:///") :] if text.startswith("sqlite:///") else text)
    return open_telemetry_store(path) if path.exists() else None


def _summary(kind: str, scope: str, active: bool, state: dict[str, Any]) -> str:
    if kind in ("drift", "label_drift"):
        what = "input drift" if kind == "drift" else "predicted-class mix shift"
        devices = state.get("active_devices") or []
        return f"sustained {what} on {scope}: " + (f"{len(devices)} device(s) drifting" if active else "recovered")
    if kind == "device_silent":
        return f"device {scope} " + ("silent" if active else "is back")
    if kind == "rollout_aborted":
        return f"rollout {scope} aborted"
    return f"{kind} {scope}"


def _num(v: object) -> float:
    """A column that holds a number (None: 0)."""
    return float(v) if isinstance(v, int | float | str) else 0.0


def alerts(store: TelemetryStore | None, limit: int = 200) -> list[dict[str, Any]]:
    """The alert episodes the ingest service keeps (newest first), firing or resolved."""
    if store is None:
        return []
    rows = store.execute(
        "SELECT kind, scope, active, opened, closed, state FROM episodes ORDER BY opened DESC LIMIT ?", (limit,)
    )
    out = []
    for kind, scope, active, opened, closed, state in rows:
        try:
            st = json.loads(str(state))
        except ValueError:
            st = {}
        k, s, a = str(kind), str(scope), bool(active)
        out.append(
            {
                "kind": k,
                "scope": s,
                "active": a,
                "opened": _num(opened),
                "closed": _num(closed),
                "summary": _summary(k, s, a, st if isinstance(st, dict) else {}),
            }
        )
    return out


def drift_models(store: TelemetryStore | None) -> list[str]:
    return store.models() if store is not None else []


def drift_reports(store: TelemetryStore, reg: Registry | None, model: str) -> list[Any]:
    from cloud_registry.telemetry.drift_report import build_report
    from edgeline.core.protocol.manifest import Reference

    def reference_for(name: str, ver: int) -> Reference | None:
        if reg is None:
            return None
        try:
            return reg.manifest(reg.resolve(f"{name}@{ver}")).reference
        except RegistryError:
            return None

    return build_report(store, model, by_group=True, reference_for=reference_for)
