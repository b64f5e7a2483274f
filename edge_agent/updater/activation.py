"""The last steps of a deployment: load the staged model, prove it with its self-test, hot-swap it in
and run the fail-closed trial on live frames; then commit it, or re-activate the committed model
(a first install has none: the agent stops serving)."""

from __future__ import annotations

import logging
import time
from typing import Protocol, runtime_checkable

from edge_agent.errors import EdgelineError, SelfTestError
from edge_agent.model import LoadedModel
from edge_agent.updater import machine as m
from edge_agent.updater.context import InFlight, UpdaterContext
from edge_agent.updater.keeper import RecordKeeper
from edge_agent.updater.trial import Trial, TrialSpec, error_count
from edgeline.core.protocol.delivery import EventKind, Reason
from edgeline.core.protocol.delivery import UpdaterState as S

log = logging.getLogger(__name__)


@runtime_checkable
class CanStopServing(Protocol):
    """An agent that can stop serving (a first install that failed its trial has nothing to go back to)."""

    def deactivate(self) -> None: ...


class Activation:
    def __init__(self, ctx: UpdaterContext, keeper: RecordKeeper, flight: InFlight) -> None:
        self.ctx = ctx
        self.keeper = keeper
        self.flight = flight
        self.trial: Trial | None = None
        #: the model that served before the one on trial
        self.previous: LoadedModel | None = None

    def load(self) -> tuple[str, str] | None:
        """Load, self-test and activate the staged model and start its trial. Returns the rejection
        (reason, detail) when the model cannot serve; the serving model is then left as it was."""
        ctx, flight = self.ctx, self.flight
        p, man, agent = self.keeper.record.pending, flight.manifest, ctx.agent
        assert p is not None and man is not None and agent is not None
        try:
            model = LoadedModel.load(man, ctx.disk.model_path(p.slot, p.filename), threads=ctx.threads)
        except EdgelineError as exc:
            return Reason.MODEL_LOAD, str(exc)
        flight.lap("load")
        try:
            model.self_test()
        except SelfTestError as exc:
            return Reason.NAN if exc.reason == "nan" else Reason.SELFTEST, str(exc)
        flight.lap("selftest")
        self.previous = agent.current_model
        errors = error_count(agent.counters())
        agent.activate(model)
        cfg = ctx.cfg
        spec = TrialSpec(cfg.trial_frames, cfg.trial_timeout_s, cfg.trial_latency_budget_ms, cfg.trial_max_errors)
        self.trial = Trial(spec, time.monotonic(), errors)
        self.keeper.transition(m.activated(self.keeper.record, ctx.clock()), EventKind.ACTIVATED)
        return None

    def judge(self) -> bool:
        """Judge the running trial; True when it ended (committed or rolled back)."""
        trial, agent, keeper = self.trial, self.ctx.agent, self.keeper
        if trial is None or keeper.record.state != S.TRIAL or agent is None:
            return False
        verdict = trial.judge(time.monotonic(), error_count(agent.counters()))
        if verdict is None:
            return False
        self.trial = None
        self.flight.lap("trial")
        p = keeper.record.pending
        assert p is not None
        timings = self.flight.timings
        if verdict.passed:
            self.ctx.disk.point_current(p.slot)
            rec = m.committed(keeper.record, self.ctx.clock())
            keeper.transition(rec, EventKind.COMMITTED, pending=p, detail=verdict.detail, timings=timings)
        else:
            if self.previous is not None:
                agent.activate(self.previous)
            else:  # a first install: there is no previous model to go back to; fail closed
                self._stop_serving(p)
            log.warning("trial of %s v%d failed: %s", p.name, p.version, verdict.detail)
            rec = m.rolled_back(keeper.record, verdict.reason, verdict.detail, self.ctx.clock())
            keeper.transition(
                rec, EventKind.ROLLED_BACK, pending=p, reason=verdict.reason, detail=verdict.detail, timings=timings
            )
        self.previous = None
        self.flight.download = None
        self.ctx.disk.clean_downloads()
        return True

    def _stop_serving(self, p: m.Pending) -> None:
        agent = self.ctx.agent
        if isinstance(agent, CanStopServing):
            agent.deactivate()
        else:
            log.error("%s v%d failed its trial; this agent has no deactivate() and keeps serving it", p.name, p.version)
