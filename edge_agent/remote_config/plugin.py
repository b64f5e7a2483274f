"""Remote configuration as an :class:`~edge_agent.plugins.AgentPlugin`: the I/O driver around the pure
checks. MQTT handlers only queue what arrives; one worker thread verifies, prepares, applies, judges
the trial and commits or rolls back, saving the record (:mod:`.store`) after every step and
reporting the retained config state. Nothing here raises into the inspection loop.

A document whose keys all apply hot is tried on the running agent; one that needs a restart is
saved as the trial and the agent is asked to restart (``edgeline agent run`` starts it again with
the document, :mod:`.boot`), and the trial is judged after that start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edge_agent.plugins import AgentHandle, FrameResult
from edge_agent.remote_config.apply import apply_hot
from edge_agent.remote_config.errors import ConfigRefused
from edge_agent.remote_config.overlay import Plan, merge
from edge_agent.remote_config.prepare import Prepared, prepare, protected_paths
from edge_agent.remote_config.store import Applied, ConfigStore
from edge_agent.remote_config.trial import ConfigTrial, Health
from edge_agent.remote_config.worker import DocumentWorker, Publish
from edgeline.core.protocol.remote_config import ConfigDocument, ConfigReason
from edgeline.core.protocol.signing import Envelope, TrustStore
from firmware_configs.schema import DeviceConfig

log = logging.getLogger(__name__)


class RemoteConfigPlugin(DocumentWorker):
    name = "remote_config"

    def __init__(
        self,
        config: DeviceConfig,
        cloud: Any,
        store: ConfigStore,
        trust: TrustStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store, clock=clock, monotonic=monotonic)
        self.config = config  # what the agent runs now
        self.cloud = cloud  # edge_agent.cloud_link.CloudLink
        self.trust = trust
        self.me = cloud.identity
        self.base: dict[str, Any] = store.load_base() or config.model_dump(mode="json", exclude_none=True)
        self._agent: Any = None  # the Agent (an AgentHandle with request_restart)
        self._trial: ConfigTrial | None = None
        #: hot trial: the configuration to go back to, and what changed
        self._undo: tuple[DeviceConfig, Plan] | None = None

    # -- AgentPlugin ----------------------------------------------------------------------------------
    def start(self, agent: AgentHandle) -> None:
        self._agent = agent
        trial = self.rec.trial
        if trial is not None and trial.restart and trial.boots >= 1:  # started with it (boot.py)
            self._begin(trial.version, frozenset(), undo=None)
        elif trial is not None:  # not started with it (boot.py was not used): it never ran
            self.rec.roll_back(ConfigReason.CRASHED, "the agent started without the config on trial", self.clock())
            self._save()
        t = self.cloud.topics
        topics = [t.device_config(self.me.device_id), *(t.group_config(g) for g in self.me.groups)]
        self.cloud.on_connect(self._on_connect)
        for topic in topics:
            self.cloud.subscribe(topic, self._on_message, 1)
        self.cloud.start()
        self._start_worker("remote-config")
        self._q.put(Publish())

    def on_result(self, result: FrameResult) -> None:
        """Nothing per frame: the trial reads the agent's status document."""

    def stop(self) -> None:
        self._stop_worker(5.0)
        if self._trial is not None and self._agent is not None:
            health = Health.of(self._agent.counters())
            if health.camera_state == "FAILED" or health.agent_state == "FAILED":
                self._roll_back(ConfigReason.TRIAL_FAILED, f"the source failed (camera {health.camera_state})")

    # -- status ---------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self.state().model_dump(mode="json", by_alias=True)

    def _state_link(self) -> tuple[Any, str]:
        return self.cloud, self.cloud.topics.device_config_state(self.me.device_id)

    # -- worker ---------------------------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.monotonic()
        if self._trial is None or self._agent is None:
            return
        verdict = self._trial.judge(now, Health.of(self._agent.counters()))
        if verdict is None:
            return
        ok, why = verdict
        if ok:
            v = self._trial.version
            self._trial, self._undo = None, None
            self.rec.commit()
            self._save()
            log.info("config version %d committed", v)
            self._agent.local_event("config_committed", {"version": v})
            self._publish_state()
            self._release_held()
        else:
            self._roll_back(ConfigReason.TRIAL_FAILED, why)

    # -- a document -----------------------------------------------------------------------------------
    def _prepare(self, doc: ConfigDocument) -> Prepared:
        return prepare(doc, self.base, self._running(), self.config, protected_paths(self.config, str(self.store.dir)))

    def _running(self) -> dict[str, Any]:
        c = self.rec.committed
        return merge(self.base, c.overlay) if c is not None else self.base

    def _refuse(self, key: str, r: ConfigRefused, retained: bool) -> None:
        if retained and key in self.rec.refused:
            return  # reported when it first came
        self.rec.refuse(key, r.version, str(r.reason), r.detail, self.clock())
        self._save()
        log.warning("config version %d refused: %s: %s", r.version, r.reason, r.detail)
        if self._agent is not None:
            self._agent.local_event(
                "config_refused", {"version": r.version, "reason": str(r.reason), "detail": r.detail[:300]}
            )
        self._publish_state()

    def _apply(self, p: Prepared, env: Envelope, now: float, key: str) -> None:
        v = p.doc.version
        restart = p.plan.needs_restart
        self.rec.begin(Applied(v, env.model_dump(mode="json"), now, p.changed, restart))
        self._save()
        agent = self._agent
        if restart:
            log.info("config version %d needs a restart (%s)", v, ", ".join(p.plan.restart))
            agent.local_event("config_restart", {"version": v, "keys": list(p.plan.restart)[:20]})
            self._publish_state()
            agent.request_restart(f"config version {v}")
            return
        try:
            result = apply_hot(agent, self.config, p.config, p.plan)
        except ConfigRefused as r:
            self.rec.trial = None
            self._refuse(key, ConfigRefused(r.reason, r.detail, v), False)
            return
        old, self.config = self.config, p.config
        self._begin(v, result.started, undo=(old, p.plan))
        log.info("config version %d applied without a restart (%s); on trial", v, ", ".join(p.plan.hot) or "no change")
        agent.local_event("config_applied", {"version": v, "keys": list(p.plan.hot)[:20]})
        self._publish_state()

    def _begin(self, version: int, watched: frozenset[str], undo: tuple[DeviceConfig, Plan] | None) -> None:
        first = Health.of(self._agent.counters())
        self._trial = ConfigTrial(version, self.config.remote_config, self.monotonic(), first, watched)
        self._undo = undo

    def _roll_back(self, reason: str, detail: str) -> None:
        assert self._trial is not None
        v = self._trial.version
        undo, self._trial, self._undo = self._undo, None, None
        self.rec.roll_back(reason, detail, self.clock())
        self._save()
        log.warning("config version %d rolled back: %s", v, detail)
        agent = self._agent
        agent.local_event("config_rolled_back", {"version": v, "reason": reason, "detail": detail[:300]})
        self._publish_state()
        if undo is None:  # tried after a restart: start again with the previous configuration
            if not self._stop.is_set():
                agent.request_restart(f"config version {v} rolled back")
            else:
                agent.restart_requested = f"config version {v} rolled back"
            return
        old, plan = undo
        try:
            apply_hot(agent, self.config, old, plan)
        except ConfigRefused as exc:  # the previous sinks cannot be rebuilt: restart with them
            log.error("config version %d: going back needs a restart: %s", v, exc)
            agent.request_restart(f"config version {v} rolled back")
            return
        self.config = old
        self._release_held()
