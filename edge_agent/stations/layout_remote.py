"""Signed station layouts in the supervisor: a small fleet link of the device itself (its own id,
its ``[cloud]``), which receives the documents addressed to the device (``devices/<id>/config``),
verifies them like any config document (trust chain, expiry, target, versions only go up), validates
the whole resulting layout (:mod:`.layout`), applies it (:mod:`.layout_apply`), judges its trial
(:mod:`.layout_trial`) and commits it or goes back to the previous layout, saving the record
(:mod:`edge_agent.remote_config.store`) after every step and reporting the retained config state on
``devices/<id>/config_state``. It never imports the inspection runtime.

MQTT handlers only queue; one worker thread does the rest (:mod:`edge_agent.remote_config.worker`, shared
with the agent's remote-config plugin). Nothing here raises into the supervisor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import EdgelineError
from edge_agent.remote_config.errors import ConfigRefused
from edge_agent.remote_config.overlay import allowed_hosts
from edge_agent.remote_config.store import Applied, ConfigStore, state_dir_of
from edge_agent.remote_config.worker import DocumentWorker
from edge_agent.stations.layout import (
    Entries,
    LayoutPlan,
    check_layout,
    file_entries,
    layout_entries,
    layout_problem,
    layout_roots,
    plan_layout,
    resolve_layout,
)
from edge_agent.stations.layout_apply import LayoutApplier
from edge_agent.stations.layout_boot import LayoutBoot, identity_of
from edge_agent.stations.layout_file import clear_layout, layout_path, write_layout
from edge_agent.stations.layout_trial import LayoutTrial
from edgeline.core.protocol.remote_config import ConfigDocument, ConfigReason
from edgeline.core.protocol.signing import Envelope, TrustStore
from edgeline.core.protocol.topics import Topics
from firmware_configs.schema import DeviceConfig
from firmware_configs.stations import device_tables

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedLayout:
    doc: ConfigDocument
    entries: Entries
    stations: dict[str, DeviceConfig]
    #: from the layout in force
    plan: LayoutPlan
    #: from the file's own stations (reported)
    changed: tuple[str, ...]


class LayoutConfig(DocumentWorker):
    label = "station layout"

    def __init__(
        self,
        boot: LayoutBoot,
        applier: LayoutApplier,
        link: Any,  # edgeline.core.mqtt_link.MqttLink
        trust: TrustStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = boot.device
        super().__init__(
            ConfigStore(state_dir_of(self.device)),
            clock=clock,
            monotonic=monotonic,
            fresh_start="starting from the file's own stations",
        )
        self.tables = boot.tables
        self.entries = boot.entries
        self.stations = boot.stations
        self.applier = applier
        self.link = link
        self.trust = trust
        self.me = identity_of(self.device)
        self.topics = Topics(self.device.cloud.topic_root, self.device.cloud.fleet)
        self.layout_file = layout_path(self.device)
        self._trial: LayoutTrial | None = None
        self._undo: tuple[Entries, dict[str, DeviceConfig]] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self.link.on_connect(self._on_connect)
        self.link.subscribe(self.topics.device_config(self.me.device_id), self._on_message, 1)
        self.link.start()
        self._start_worker("station-layout")

    def stop(self) -> None:
        """Stop the worker (a layout being applied is applied to the end first) and the link. A trial
        under way stays in the record: the next start rolls it back (``crashed``)."""
        self._stop_worker(self.applier.sup.stop_timeout_s + 5.0)
        self.link.stop()

    # -- status ---------------------------------------------------------------------------------------
    def _state_link(self) -> tuple[Any, str]:
        return self.link, self.topics.device_config_state(self.me.device_id)

    # -- worker ---------------------------------------------------------------------------------------
    def _on_trial(self) -> bool:
        return self._trial is not None

    def _prepare(self, doc: ConfigDocument) -> PreparedLayout:
        v = doc.version
        spec = self.device.remote_config
        sd = self.device.updater.state_dir
        protected = [sd, str(self.store.dir), self.device.trust_file, self.device.updater.trust_file]
        try:
            entries = layout_entries(doc.config, self.tables)
            check_layout(
                entries,
                self.tables,
                layout_roots(self.tables, spec.allowed_dirs),
                allowed_hosts(device_tables(self.tables), spec.allowed_hosts),
                protected,
            )
            stations = resolve_layout(self.tables, entries, f"station layout version {v}")
            plan = plan_layout(self.entries, entries)
            problem = layout_problem(stations, plan)
            if problem is not None:
                raise ConfigRefused(ConfigReason.NO_STATION, problem)
            if not plan.empty and not spec.allow_restart:
                raise ConfigRefused(
                    ConfigReason.FORBIDDEN,
                    "a station layout starts and stops station processes, and remote_config.allow_restart is off",
                )
        except ConfigRefused as exc:
            raise ConfigRefused(exc.reason, exc.detail, v) from exc
        return PreparedLayout(doc, entries, stations, plan, plan_layout(file_entries(self.tables), entries).describe())

    def _refuse(self, key: str, r: ConfigRefused, retained: bool) -> None:
        if retained and key in self.rec.refused:
            return
        self.rec.refuse(key, r.version, str(r.reason), r.detail, self.clock())
        self._save()
        log.warning("station layout version %d refused: %s: %s", r.version, r.reason, r.detail)
        self._publish_state()

    def _in_force(self, version: int, entries: Entries) -> None:
        if entries == file_entries(self.tables):
            clear_layout(self.layout_file)
        else:
            write_layout(self.layout_file, version, entries)

    def _apply(self, p: PreparedLayout, env: Envelope, now: float, key: str = "") -> None:
        v = p.doc.version
        self.rec.begin(Applied(v, env.model_dump(mode="json"), now, p.changed, restart=True))
        self._save()
        self._publish_state()
        self._undo = (self.entries, self.stations)
        self._in_force(v, p.entries)
        self.entries, self.stations = p.entries, p.stations
        log.info("station layout version %d: %s", v, ", ".join(p.plan.describe()) or "no change")
        spec = self.device.remote_config
        self._trial = LayoutTrial(v, p.plan.tried, self.monotonic(), spec.trial_s, spec.trial_frames, 0.0)
        try:
            self.applier.apply(p.plan, p.stations)
        except Exception as exc:  # the processes could not be arranged: back to the previous layout at once
            log.exception("station layout version %d could not be applied", v)
            self._roll_back(f"the supervisor could not apply it: {exc}")
            return
        self._trial = LayoutTrial(
            v, p.plan.tried, self.monotonic(), spec.trial_s, spec.trial_frames, spec.trial_timeout_s
        )

    def _tick(self) -> None:
        trial = self._trial
        if trial is None:
            return
        verdict = trial.judge(self.monotonic(), self.applier.runs(trial.stations, self.stations))
        if verdict is None:
            return
        ok, why = verdict
        if ok:
            self._trial, self._undo = None, None
            self.rec.commit()
            self._save()
            log.info("station layout version %d committed", trial.version)
            self._publish_state()
            self._release_held()
        else:
            self._roll_back(why)

    def _roll_back(self, why: str) -> None:
        assert self._trial is not None and self._undo is not None
        v = self._trial.version
        entries, stations = self._undo
        self._trial, self._undo = None, None
        self.rec.roll_back(ConfigReason.TRIAL_FAILED, why, self.clock())
        self._save()
        log.warning("station layout version %d rolled back: %s", v, why)
        back = plan_layout(self.entries, entries)
        committed = self.rec.committed
        self._in_force(committed.version if committed else 0, entries)
        self.entries, self.stations = entries, stations
        self.applier.apply(back, stations)
        self._publish_state()
        self._release_held()


def shared_identity(device: DeviceConfig, stations: dict[str, DeviceConfig]) -> list[str]:
    """The stations that would connect as the device itself (same username or client certificate)."""

    def ident(c: DeviceConfig) -> tuple[str | None, str | None]:
        return c.cloud.username, c.cloud.tls.cert_file if c.cloud.tls is not None else None

    mine = ident(device)
    return [
        n for n, c in stations.items() if any(a is not None and a == b for a, b in zip(mine, ident(c), strict=True))
    ]


def start_layout_config(
    boot: LayoutBoot, applier: LayoutApplier, config_path: Path | None = None
) -> LayoutConfig | None:
    """The device's layout link when ``[remote_config]`` is on and the device has a fleet link; None
    (logged) otherwise."""
    device = boot.device
    if not device.remote_config.enabled:
        return None
    if not device.cloud.enabled:
        log.warning("remote_config is on but [cloud] is off: no station layout can be received")
        return None
    from edge_agent.cloud_link import link_settings
    from edge_agent.stations.layout_boot import layout_trust
    from edgeline.core.mqtt_link import MqttLink

    try:
        trust = layout_trust(device, boot.stations)
        link = MqttLink(link_settings(device.cloud, identity_of(device), None))
    except EdgelineError as exc:
        log.error("station layouts cannot be received: %s", exc)
        return None
    for name in shared_identity(device, boot.stations):
        log.warning(
            "station %s connects with the device's own [cloud] identity, which the supervisor's layout link "
            "uses too: on a broker that pins client ids to identities one session takes the other over",
            name,
        )
    ctl = LayoutConfig(boot, applier, link, trust)
    ctl.start()
    log.info("station layouts: listening on %s", ctl.topics.device_config(ctl.me.device_id))
    return ctl
