"""``edgeline demo --scenario triggered``: a triggered inspection station and a PLC that drives it.

The camera simulator streams one line (every frame a new part at the inspection position, with its
ground truth logged); v1 is built and signed as in the main story; one agent process runs with the
triggered-station layout (``[source] mode = "trigger"``, a Modbus TCP server on loopback, a JSONL
sink) and its bundle installed locally (an offline line: no broker). A simulated PLC
(:class:`~edgeline.demo.plc.SimulatedPlc`, a pymodbus client) then, part after part at the line's
rate, writes the part number, sets the trigger coil and polls the result registers until they show
that part. The scenario scores what the PLC was told against the camera's truth (escapes and false
rejects with their intervals), checks that every part got exactly one result and that Modbus and the
station's own record agree, and reports the trigger-to-verdict time as the PLC saw it. A simulated
operator then checks a share of the parts (``feedback_share``) and posts their truth to the station's
local API; the field rates those feedback counts give (:mod:`edgeline.demo.operator`, the cloud's
field-rate code) are shown beside the ones the camera's truth gives.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeline.core.fsutil import write_atomic
from edgeline.demo.broker import free_port
from edgeline.demo.devices import launch_agent, nested
from edgeline.demo.errors import DemoError
from edgeline.demo.models import build_v1, make_datasets
from edgeline.demo.operator import OperatorRun, field_rates, give_feedback
from edgeline.demo.plc import SimulatedPlc
from edgeline.demo.processes import CameraProcess, stop_process, tail
from edgeline.demo.scoring import load_truth
from edgeline.demo.settings import DemoSettings
from edgeline.demo.triggered_score import STATION, score_parts, truth_of
from edgeline.demo.workspace import Workspace
from firmware_configs.loader import parse_config
from firmware_configs.writer import render_toml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriggeredPlan:
    """How many parts the PLC sends, how fast, and the station's trigger settings."""

    parts: int = 300
    rate: float = 8.0  # parts per second arriving at the station
    window_ms: float = 300.0
    budget_ms: float = 150.0
    #: the share of parts a simulated operator checks at the station (feedback through the local API)
    feedback_share: float = 0.25

    @classmethod
    def make(cls, *, quick: bool, parts: int | None) -> TriggeredPlan:
        return cls(parts=parts if parts is not None else (120 if quick else 300))


def station_config(
    ws: Workspace, camera_url: str, bundle: Path, modbus_port: int, plan: TriggeredPlan, api_port: int = 0
) -> dict[str, Any]:
    """The station's config sections (the shape of firmware_configs/profiles/triggered-station.toml)."""
    root = ws.device(STATION)
    return {
        "device": {"id": STATION, "groups": ["demo-triggered"], "hardware_class": "demo-x86"},
        "source": {"kind": "url", "url": camera_url, "mode": "trigger", "queue_policy": "drop_oldest", "queue_size": 4},
        "trigger": {"window_ms": plan.window_ms, "budget_ms": plan.budget_ms, "max_pending": 8},
        "model": {"bundle": str(bundle), "trust_file": str(ws.trust_file)},
        "inference": {"threads": 1, "stats_every": 0},
        "line.modbus": {"host": "127.0.0.1", "port": modbus_port},
        "sinks.jsonl": {"path": str(root / "verdicts.jsonl"), "events": True},
        "status": {"path": str(root / "status.json"), "interval_s": 0.5},
        "cloud": {"enabled": False},
        "telemetry": {"enabled": False},
        # the operator's feedback at the station: stored on the device, posted to the local API
        "feedback": {"enabled": True, "path": str(root / "feedback.db")},
        "api": {"enabled": True, "host": "127.0.0.1", "port": api_port},
    }


def _records(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text("utf-8").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue  # a line cut short by the stop
        if isinstance(doc, dict):
            out.append(doc)
    return out


def run_triggered(settings: DemoSettings, ws: Workspace, err: Console, plan: TriggeredPlan) -> dict[str, Any]:
    """Run the scenario; returns its summary (also written to the workspace's summary.json)."""
    t0 = time.monotonic()
    err.print("[bold]Triggered station[/]: a simulated PLC triggers parts over Modbus TCP and reads the verdicts")
    ws.init_secrets()
    camera = CameraProcess(ws.root, [STATION], fps=max(16.0, 2 * plan.rate), seed=settings.seed)
    agent = None
    try:
        camera.start()
        camera.wait_ready()
        err.print("  building v1 from synthetic line images (as in the main story)")
        make_datasets(ws, settings, lambda _msg: None)
        built = build_v1(ws, settings, lambda _msg: None)
        port, api_port = free_port(), free_port()
        sections = station_config(ws, camera.url(STATION), built.bundle_dir, port, plan, api_port)
        parse_config(nested(sections), "triggered station config")
        cfg = ws.device(STATION) / "station.toml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(render_toml(sections, f"edgeline demo triggered station: edgeline agent run --config {cfg}"))
        log_path = ws.device(STATION) / "agent.log"
        agent = launch_agent(cfg, log_path)
        err.print(f"  station agent pid {agent.pid}, Modbus TCP on 127.0.0.1:{port}; the PLC connects")
        plc = SimulatedPlc("127.0.0.1", port, timeout_s=max(2.0, 4 * plan.budget_ms / 1000.0))
        try:
            plc.connect()
            deadline = time.monotonic() + 30.0
            while not plc.ready():
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise DemoError(f"the station did not start serving v1: {tail(log_path)}")
                time.sleep(0.2)
            with Progress(
                TextColumn("  parts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
            ) as bar:
                task = bar.add_task("parts", total=plan.parts)
                reads = plc.run(1, plan.parts, plan.rate, tick=lambda n: bar.update(task, completed=n))
        finally:
            plc.close()
        # a simulated operator checks some of the parts and tells the station what they were
        seen = truth_of(
            _records(ws.device(STATION) / "verdicts.jsonl"), load_truth(camera.truth_dir / f"{STATION}.csv")
        )
        operator = give_feedback("127.0.0.1", api_port, seen, share=plan.feedback_share, seed=settings.seed)
        err.print(f"  the operator checked {operator.checked} parts at the station ({operator.accepted} stored)")
    finally:
        if agent is not None:
            stop_process(agent)
        camera.stop()  # the camera's truth log is complete once it has stopped
    records = _records(ws.device(STATION) / "verdicts.jsonl")
    summary = score_parts(reads, records, load_truth(camera.truth_dir / f"{STATION}.csv"))
    summary["operator_feedback"] = _feedback_summary(ws.device(STATION) / "feedback.db", len(reads), operator)
    summary.update(
        {
            "scenario": "triggered",
            "model": {"name": built.manifest.name, "version": built.manifest.version},
            "rate_parts_per_s": plan.rate,
            "budget_ms": plan.budget_ms,
            "seconds": round(time.monotonic() - t0, 1),
            "workdir": str(ws.root),
        }
    )
    write_atomic(ws.summary_path, json.dumps(summary, indent=1).encode())
    return summary


def _feedback_summary(db: Path, parts: int, operator: OperatorRun) -> dict[str, Any]:
    """The field rates from the operator's feedback alone (the counts a telemetry window carries)."""
    esc, fr, n = field_rates(db, parts)
    return {
        "checked": operator.checked,
        "stored": operator.accepted,
        "refused": operator.refused,
        "verdicts_with_feedback": n,
        "escape": esc.to_dict(),
        "false_reject": fr.to_dict(),
    }


def _pct(block: dict[str, Any]) -> str:
    if not block["of"]:
        return "no parts"
    lo, hi = block["ci95"]
    return f"{block['count']}/{block['of']} = {100 * block['rate']:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%)"


def triggered_table(s: dict[str, Any]) -> Table:
    t = Table(title=f"Triggered station: {s['parts']} parts at {s['rate_parts_per_s']:g}/s, PLC over Modbus TCP")
    t.add_column("figure")
    t.add_column("value")
    lat = s["trigger_to_modbus_ms"]
    ins = s["inspect_ms"]
    t.add_row("result states (as the PLC read them)", ", ".join(f"{k} {v}" for k, v in sorted(s["plc_states"].items())))
    t.add_row("Modbus verdict = station record", f"{s['modbus_equals_sink']['count']}/{s['modbus_equals_sink']['of']}")
    t.add_row("parts by truth", f"{s['truth']['good']} good, {s['truth']['defective']} defective")
    t.add_row("escape (defective told ok)", _pct(s["escape"]))
    t.add_row("false reject (good told defect/unknown)", _pct(s["false_reject"]))
    fb = s.get("operator_feedback")
    if fb:
        t.add_row("operator feedback (simulated)", f"{fb['stored']} of {s['parts']} parts checked at the station")
        t.add_row("escape from operator feedback", fb["escape"]["text"])
        t.add_row("false reject from operator feedback", fb["false_reject"]["text"])
    if lat["p50"] is not None:
        t.add_row(
            "trigger to verdict on Modbus", f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms"
        )
    if ins["p50"] is not None:
        t.add_row("inspection alone (the station's)", f"p50 {ins['p50']:.2f} ms, max {ins['max']:.2f} ms")
    wait = s["frame_wait_ms"]
    if wait["p50"] is not None:
        t.add_row("of which waiting for the next frame", f"p50 {wait['p50']:.1f} ms, max {wait['max']:.1f} ms")
    t.add_row("result", "[green]ok[/]" if s["ok"] else "[red]FAILED[/]")
    return t
