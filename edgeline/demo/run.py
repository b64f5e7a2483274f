"""Run the whole story, stage after stage, and always clean up.

A stage that fails stops the story (the later stages are marked skipped); whatever happened, the
agents, the camera simulator, the cloud connections and the broker are stopped in that order, the
verdicts are scored, and the summary and the report are written. Ctrl-C (or SIGTERM) ends the
current stage as failed and takes the same path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from cloud_registry.errors import RegistryError
from cloud_registry.telemetry.field_report import FieldSettings
from cloud_registry.telemetry.field_store import field_report
from edgeline.core.fsutil import write_atomic
from edgeline.demo import shadow_stage, stages, tamper, updates
from edgeline.demo.context import DemoContext, Outcome
from edgeline.demo.models import MODEL_NAME
from edgeline.demo.processes import leftover_processes, stop_process
from edgeline.demo.progress import StageProgress
from edgeline.demo.report.html import render
from edgeline.demo.settings import DemoSettings
from edgeline.demo.summary import StageRecord, build_summary, fleet_snapshot, score
from edgeline.demo.workspace import Workspace

log = logging.getLogger(__name__)

Stage = Callable[[DemoContext], Outcome]

STORY: list[tuple[str, str, Stage]] = [
    ("setup", "Start the broker, the camera simulator and the devices", stages.setup),
    ("build_v1", "1. Build v1 from synthetic line images, register it", stages.build),
    ("deploy_v1", "2. Deploy v1 as a canary, then to all devices", stages.deploy_v1),
    ("inspect", "3. The devices inspect their streams offline", stages.inspect),
    ("drift", "4. The lighting on one line drifts darker", stages.drift),
    ("detect", "5. Telemetry shows the drift, on that line only", stages.detect),
    ("retrain", "6. Retrain v2 from the drift evidence, gate it", updates.retrain_stage),
    ("shadow_v2", "6b. v2 in the shadow of v1 on that line: the agreement evidence", shadow_stage.shadow_v2),
    ("deploy_v2", "7. v2 as a canary on that line, then promoted", updates.deploy_v2),
    ("new_kind", "8. A new defect kind appears on one line", updates.new_kind_stage),
    ("tampered", "9. A tampered update is refused, inspection goes on", tamper.tampered_stage),
]
SCORE = ("score", "Score the devices' verdicts against ground truth")


@dataclass
class DemoRun:
    summary: dict[str, Any]
    interrupted: bool


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """Cleanup must finish: a second Ctrl-C (or SIGTERM) while it runs is ignored, not obeyed halfway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _teardown(ctx: DemoContext) -> dict[str, Any]:
    """Stop everything this run started; returns exit codes (agents first: they flush their outbox
    to the broker and publish their offline state on the way out)."""
    codes: dict[str, Any] = {}
    if ctx.v3_build is not None and ctx.v3_build.proc is not None:
        codes["v3_build"] = ctx.v3_build.stop()  # finished long ago, unless the story stopped early
    if ctx.operator is not None:
        ctx.operator.stop()  # its last round first: the agents still take feedback
    for proc in ctx.devices.values():
        proc.terminate()
    for d, proc in ctx.devices.items():
        codes[d] = proc.stop(signal_it=False)
    if ctx.camera is not None:
        codes["camera"] = stop_process(ctx.camera.proc, 5.0)
    if ctx.cloud is not None:
        time.sleep(0.5)  # the agents' last windows, flushed on the way out, reach the ingest
        try:
            ctx.windows = [sw.window for sw in ctx.cloud.telemetry.windows(MODEL_NAME)]
        except RegistryError:
            log.exception("cannot read the telemetry store")
        try:  # the cloud's field rates from the feedback counts the windows carried (the real path)
            s = ctx.settings
            limits = FieldSettings(escape_limit=s.field_escape_limit, false_reject_limit=s.field_false_reject_limit)
            ctx.field_report = field_report(ctx.cloud.telemetry, MODEL_NAME, limits, scopes=("line",)).to_dict()
        except RegistryError:
            log.exception("cannot read the field report")
        ctx.cloud.stop()
    if ctx.broker is not None:
        ctx.broker.stop()
        codes["broker"] = "stopped"
    return codes


def _run_stage(ctx: DemoContext, name: str, fn: Callable[[DemoContext], Outcome]) -> Outcome:
    try:
        return fn(ctx)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the orchestrator's boundary: any failure ends the story, cleanly
        from converters.errors import ConverterError
        from edgeline.core.errors import EdgelineError

        if not isinstance(exc, RegistryError | ConverterError | EdgelineError):
            log.error("stage %s crashed:\n%s", name, traceback.format_exc())
            return Outcome(False, f"internal error: {type(exc).__name__}: {exc}")
        log.warning("stage %s failed: %s", name, exc)
        return Outcome(False, str(exc))


def _story(ctx: DemoContext, ui: StageProgress, records: list[StageRecord]) -> bool:
    """Run the stages in order; returns whether the story was interrupted. A Ctrl-C or SIGTERM
    arriving anywhere in here (inside a stage or between two) ends the current stage as failed."""
    current: tuple[str, str, float] | None = None
    failed = False
    try:
        for name, title, fn in STORY:
            if failed:
                ui.skip(name, "an earlier stage failed")
                records.append(StageRecord(name, title, "skipped", summary="an earlier stage failed"))
                continue
            current = (name, title, time.monotonic())
            ui.start(name)
            out = _run_stage(ctx, name, fn)
            seconds = time.monotonic() - current[2]
            current = None
            ui.end(name, out.ok, out.summary, seconds)
            records.append(
                StageRecord(name, title, "passed" if out.ok else "failed", seconds, out.summary, out.details)
            )
            failed = not out.ok
        if ctx.cloud is not None:
            ctx.fleet = fleet_snapshot(ctx)
        return False
    except KeyboardInterrupt:
        with _shielded():
            done = {r.name for r in records}
            for name, title, _ in STORY:
                if name in done:
                    continue
                if current is not None and name == current[0]:
                    seconds = time.monotonic() - current[2]
                    ui.end(name, False, "interrupted", seconds)
                    records.append(StageRecord(name, title, "failed", seconds, "interrupted"))
                else:
                    ui.skip(name, "interrupted")
                    records.append(StageRecord(name, title, "skipped", summary="interrupted"))
        return True


def run_demo(settings: DemoSettings, ws: Workspace, console: Console) -> DemoRun:
    titles = [(n, t) for n, t, _ in STORY] + [SCORE]
    header = f"edgeline demo · {settings.devices} devices · workspace {ws.root}"
    records: list[StageRecord] = []
    table: dict[str, dict[str, Any]] = {}
    with StageProgress(titles, console, header) as ui:
        ctx = DemoContext(settings, ws, detail=ui.detail)
        interrupted = True
        try:
            interrupted = _story(ctx, ui, records)
        finally:
            with _shielded():
                ui.detail("stopping agents, camera, broker")
                codes = _teardown(ctx)
                log.info("teardown exit codes: %s", codes)
        with _shielded():
            if interrupted or not (ctx.v1 and ctx.v2):
                ui.skip(SCORE[0], "nothing to compare")
                records.append(StageRecord(*SCORE, "skipped", summary="the story did not reach v2"))
            else:
                ui.start(SCORE[0])
                started = time.monotonic()

                def scoring(c: DemoContext) -> Outcome:
                    nonlocal table
                    result, table = score(c)
                    return result

                out = _run_stage(ctx, SCORE[0], scoring)
                seconds = time.monotonic() - started
                ui.end(SCORE[0], out.ok, out.summary, seconds)
                records.append(StageRecord(*SCORE, "passed" if out.ok else "failed", seconds, out.summary, out.details))
    with _shielded():
        summary = build_summary(ctx, records, table)
        summary["processes"] = {"exit_codes": codes, "leftover": leftover_processes(ws.root)}
        write_atomic(ws.summary_path, json.dumps(summary, indent=1, default=str).encode())
        write_atomic(ws.report_path, render(summary).encode("utf-8"))
    return DemoRun(summary, interrupted)
