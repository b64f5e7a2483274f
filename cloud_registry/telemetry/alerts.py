"""Alerts: a webhook or a command fires when something needs a human, ONCE per episode.

Each kind is an episode with a scope, persisted in the telemetry store (a restarted service
neither repeats nor forgets an open episode):

* ``drift``: sustained input drift (input statistics or confidence) in a model version's group.
  Each device's windows feed its own :class:`~edge_agent.telemetry.drift.Sustained` rule; the group's
  episode opens when the first device of the group enters sustained drift and closes when the last
  one has recovered. Scope ``model/vN/group``.
* ``label_drift``: the same for the predicted-class mix (``class_mix``) against the reference mix.
* ``device_silent``: a device not heard from (state heartbeat) for longer than its budget. Scope:
  the device id (this is fleet data, not telemetry: the operator must know which device).
* ``rollout_aborted``: a rollout reached ``aborted``. Scope: the rollout id.
* ``field_escape`` / ``field_false_reject``: a model version's field rate, measured from operator
  feedback or estimated without labels, above its configured limit in a version, group or line
  (:mod:`.field_alerts`); ``field_slice``: one shift, lighting band or line significantly worse
  than the others. Scope ``model/vN/<scope>/<value>``.

An alert is a JSON document: ``{"kind", "scope", "state": "firing"|"resolved", "ts", "summary",
"details"}``. :class:`WebhookSink` POSTs it; :class:`CommandSink` runs a command with it on stdin
(and ``EDGELINE_ALERT_KIND`` / ``_STATE`` / ``_SCOPE`` in the environment).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from cloud_registry.errors import RegistryError
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.telemetry.drift import Sustained
from edgeline.core.protocol.telemetry import STAT_NAMES, TelemetryWindow

log = logging.getLogger(__name__)

AlertKind = Literal[
    "drift", "label_drift", "device_silent", "rollout_aborted", "field_escape", "field_false_reject", "field_slice"
]
CHANNELS: dict[str, tuple[str, ...]] = {
    "drift": (*STAT_NAMES, "confidence", "anomaly_score"),
    "label_drift": ("class_mix",),
}


class AlertError(RegistryError):
    """An alert could not be delivered (webhook unreachable or refused, command failed)."""


@dataclass(frozen=True)
class Alert:
    kind: str
    scope: str
    state: Literal["firing", "resolved"]
    ts: float
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")


class AlertSink(Protocol):
    def send(self, alert: Alert) -> None: ...


@dataclass
class WebhookSink:
    url: str
    timeout_s: float = 5.0
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise AlertError(f"webhook URL must start with http:// or https://, got {self.url!r}")

    def send(self, alert: Alert) -> None:
        req = urllib.request.Request(
            self.url,
            data=alert.to_json(),
            headers={"Content-Type": "application/json", **self.headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                if resp.status >= 300:
                    raise AlertError(f"webhook {self.url} answered HTTP {resp.status}")
        except urllib.error.HTTPError as exc:
            raise AlertError(f"webhook {self.url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise AlertError(f"webhook {self.url} unreachable: {exc}") from exc


@dataclass
class CommandSink:
    argv: Sequence[str]
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.argv:
            raise AlertError("alert command is empty")

    def send(self, alert: Alert) -> None:
        env = {
            **os.environ,
            "EDGELINE_ALERT_KIND": alert.kind,
            "EDGELINE_ALERT_STATE": alert.state,
            "EDGELINE_ALERT_SCOPE": alert.scope,
        }
        try:
            proc = subprocess.run(
                list(self.argv),
                input=alert.to_json(),
                env=env,
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AlertError(f"alert command {self.argv[0]} failed: {exc}") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()[-300:]
            raise AlertError(f"alert command {self.argv[0]} exited {proc.returncode}: {err}")


class AlertEngine:
    """Turns windows, fleet heartbeats and rollout states into episodes, and episodes into alerts."""

    def __init__(
        self,
        store: TelemetryStore,
        sinks: Sequence[AlertSink] = (),
        *,
        need: int = 3,
        of: int = 4,
        clear: int = 3,
        silent_budget_s: float = 90.0,
        notify_resolved: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sinks = list(sinks)
        self.rule = (need, of, clear)
        self.silent_budget_s = silent_budget_s
        self.notify_resolved = notify_resolved
        self.clock = clock
        self.sent: list[Alert] = []
        self.failures = 0
        self._lock = threading.RLock()
        self._detectors: dict[tuple[str, str, str], Sustained] = {}
        self._scopes: dict[tuple[str, str], set[str]] = {}

    # -- episodes --------------------------------------------------------------------------------------
    def _episode(self, kind: str, scope: str) -> tuple[bool, dict[str, Any]]:
        rows = self.store.execute("SELECT active, state FROM episodes WHERE kind = ? AND scope = ?", (kind, scope))
        if not rows:
            return False, {}
        active, state = rows[0]
        return bool(active), json.loads(str(state))

    def _save(self, kind: str, scope: str, active: bool, state: dict[str, Any], changed: bool) -> None:
        now = self.clock()
        self.store.execute(
            "INSERT INTO episodes(kind, scope, active, opened, closed, state) VALUES (?, ?, ?, ?, NULL, ?) "
            "ON CONFLICT(kind, scope) DO UPDATE SET active = excluded.active, state = excluded.state, "
            "opened = CASE WHEN ? = 1 AND excluded.active = 1 THEN excluded.opened ELSE episodes.opened END, "
            "closed = CASE WHEN ? = 1 AND excluded.active = 0 THEN ? ELSE episodes.closed END",
            (kind, scope, int(active), now, json.dumps(state), int(changed), int(changed), now),
        )

    def _transition(
        self,
        kind: str,
        scope: str,
        active: bool,
        summary: str,
        details: dict[str, Any],
        state: dict[str, Any] | None = None,
    ) -> Alert | None:
        with self._lock:
            was, old_state = self._episode(kind, scope)
            changed = was != active
            self._save(kind, scope, active, old_state if state is None else state, changed)
        if not changed:
            return None
        alert = Alert(kind, scope, "firing" if active else "resolved", self.clock(), summary, details)
        if active or self.notify_resolved:
            self._deliver(alert)
        return alert

    def _deliver(self, alert: Alert) -> None:
        self.sent.append(alert)
        log.warning("alert %s %s: %s", alert.state, alert.kind, alert.summary)
        for sink in self.sinks:
            for attempt in range(3):
                try:
                    sink.send(alert)
                    break
                except AlertError as exc:
                    log.error("alert delivery failed (attempt %d): %s", attempt + 1, exc)
                    if attempt == 2:
                        self.failures += 1
                        self.store.bump("alerts.failed")
                    else:
                        time.sleep(0.2 * (attempt + 1))

    def episode(self, kind: AlertKind, scope: str, active: bool, summary: str, details: dict[str, Any]) -> Alert | None:
        """Open (``active``) or close the episode of ``kind`` in ``scope``; an alert only when it changes."""
        return self._transition(kind, scope, active, summary, details)

    def active(self, kind: str | None = None) -> list[tuple[str, str]]:
        sql = "SELECT kind, scope FROM episodes WHERE active = 1"
        args: tuple[object, ...] = (kind,) if kind else ()
        rows = self.store.execute(sql + (" AND kind = ?" if kind else "") + " ORDER BY kind, scope", args)
        return [(str(k), str(s)) for k, s in rows]

    # -- drift and label drift from windows -------------------------------------------------------------
    def _active_devices(self, kind: str, scope: str) -> set[str]:
        """Devices of a scope in a sustained episode (cached; persisted only when the set changes)."""
        key = (kind, scope)
        cached = self._scopes.get(key)
        if cached is None:
            _, state = self._episode(kind, scope)
            devices = state.get("active_devices", [])
            cached = self._scopes[key] = {str(d) for d in devices} if isinstance(devices, list) else set()
        return cached

    def on_window(self, w: TelemetryWindow) -> list[Alert]:
        """Feed one newly stored window (an ingest listener). Returns the alerts it caused. Only a
        device entering or leaving sustained drift touches the database; the per-device window history
        lives in memory (after a restart a device in an episode stays in it until it has recovered)."""
        out: list[Alert] = []
        scope = f"{w.model.name}/v{w.model.version}/{w.group or '-'}"
        for kind, keys in CHANNELS.items():
            entries = {k: d for k, d in w.drift.items() if k in keys}
            if not entries:
                continue
            drifted = sorted(k for k, d in entries.items() if d.drifted)
            with self._lock:
                active = self._active_devices(kind, scope)
                det = self._detectors.get((kind, scope, w.device))
                if det is None:
                    det = self._detectors[(kind, scope, w.device)] = Sustained(*self.rule)
                    det.active = w.device in active
                transition = det.update(bool(drifted))
                if transition is None:
                    continue
                if transition == "start":
                    active.add(w.device)
                else:
                    active.discard(w.device)
                devices = sorted(active)
                seen = sum(1 for k in self._detectors if k[:2] == (kind, scope))
            details = {
                "model": w.model.name,
                "version": w.model.version,
                "group": w.group,
                "devices_drifting": len(devices),
                "devices_seen": seen,
                "last_window": {"device": w.device, "end": w.end, "psi": {k: d.psi for k, d in entries.items()}},
                "drifted": drifted,
            }
            what = "input drift" if kind == "drift" else "predicted-class mix shift"
            summary = f"sustained {what} on {w.model.name} v{w.model.version} ({w.group or 'no group'}): " + (
                f"{len(devices)} device(s) drifting" if devices else "recovered"
            )
            alert = self._transition(kind, scope, bool(devices), summary, details, {"active_devices": devices})
            if alert is not None:
                out.append(alert)
        return out

    # -- silent devices and aborted rollouts ----------------------------------------------------------
    def check_silent(self, last_seen: Iterable[tuple[str, float]], now: float | None = None) -> list[Alert]:
        """``(device_id, last heartbeat time)`` pairs, e.g. from the registry's device table."""
        t = self.clock() if now is None else now
        out = []
        for device, seen in last_seen:
            silent = t - seen > self.silent_budget_s
            summary = f"device {device} silent for {t - seen:.0f} s" if silent else f"device {device} is back"
            a = self._transition("device_silent", device, silent, summary, {"device": device, "last_seen": seen})
            if a is not None:
                out.append(a)
        return out

    def check_rollouts(self, rollouts: Iterable[tuple[str, str, str]]) -> list[Alert]:
        """``(rollout id, status, reason)``: fires once for each rollout that reached ``aborted``."""
        out = []
        for rid, status, reason in rollouts:
            if status != "aborted":
                continue
            summary = f"rollout {rid} aborted: {reason}"
            a = self._transition("rollout_aborted", rid, True, summary, {"rollout": rid, "reason": reason})
            if a is not None:
                out.append(a)
        return out
