"""Field rates on the synthetic line: the estimate without labels against the true field escape and
false-reject rates, and the windows until the field alert, with one line darkened.

Four lines (devices) inspect synthetic parts (``converters.synth``, 20% defective) with a v1 model
built by the converters pipeline, through the real device path: ``inspect_frame`` (preprocessing,
ONNX Runtime, verdict), the telemetry plugin (windows of ``--window`` parts, field metrics, k-merging),
a real feedback store per line where a simulated operator gives the true answer for a random
``--feedback`` share of the parts, and the outbox. The windows go into a SQLite telemetry store; after
each round (one window per line) the cloud side computes the field report over the last
``--lookback`` rounds and runs the field alerts (``FieldMonitor``). After ``--normal`` rounds the
line ``dark`` is darkened (brightness -40, contrast 0.85, as the drift benchmark).

Per round and line it records the true rates (from the parts' truth) over the lookback, the rate
measured from the feedback, and three estimates: the CBPE-style estimate calibrated on the feedback of
the normal rounds (the reference), the same calibrated on the lookback's own feedback, and two floors
measured in the same run: the scores taken at face value (no calibration), and the reference rates
frozen (what a report without field monitoring would still claim).

    python bench/bench_field.py [--normal 6] [--dark 8] [--window 200] [--feedback 0.05]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit  # noqa: E402
from cloud_registry.telemetry.alerts import AlertEngine  # noqa: E402
from cloud_registry.telemetry.field_alerts import FieldLimits, FieldMonitor  # noqa: E402
from cloud_registry.telemetry.field_estimate import BIN_MIDS, Calibration, calibrate, estimate  # noqa: E402
from cloud_registry.telemetry.field_rates import FieldTotals, measured  # noqa: E402
from cloud_registry.telemetry.field_report import FieldSettings, accumulate  # noqa: E402
from cloud_registry.telemetry.store import TelemetryStore  # noqa: E402
from edge_agent.feedback.rules import FeedbackRequest  # noqa: E402
from edge_agent.feedback.service import FeedbackService  # noqa: E402
from edge_agent.feedback.store import FeedbackStore  # noqa: E402
from edge_agent.inference import inspect_frame  # noqa: E402
from edge_agent.model import LoadedModel  # noqa: E402
from edge_agent.outbox.store import Outbox  # noqa: E402
from edge_agent.telemetry.plugin import TelemetryPlugin  # noqa: E402
from edge_agent.telemetry.privacy import pseudonym  # noqa: E402
from edgeline.core.protocol.telemetry import TelemetryWindow, parse_window  # noqa: E402
from edgeline.core.protocol.topics import Topics  # noqa: E402
from firmware_configs.telemetry_section import TelemetrySection  # noqa: E402

SECRET = b"bench-field-secret-0123456789abcdef"
T0 = 1_764_576_000.0  # 2025-12-01 08:00 UTC
PART_S = 0.5  # 120 parts a minute
LINES = ("line-1", "line-2", "line-3", "dark")
DEFECT_SHARE = 0.2


@dataclass
class Clock:
    t: float = T0

    def __call__(self) -> float:
        return self.t


@dataclass
class Agent:
    """The part of the agent the telemetry plugin reads: the device id, the model, the feedback."""

    device_id: str
    current_model: LoadedModel
    feedback: FeedbackService
    events: list[Any] = field(default_factory=list)

    def activate(self, model: LoadedModel) -> None:  # pragma: no cover - not used
        self.current_model = model

    def deactivate(self) -> None:  # pragma: no cover - not used
        pass

    def local_event(self, kind: str, payload: dict[str, object]) -> None:
        self.events.append((kind, payload))

    def counters(self) -> dict[str, Any]:
        return {}


@dataclass
class Line:
    name: str
    agent: Agent
    plugin: TelemetryPlugin
    clock: Clock
    rng: np.random.Generator
    #: the operator's own choices (which parts to check), apart from the parts' rendering
    operator: np.random.Generator
    sent: set[str] = field(default_factory=set)
    #: per round: (defects, escapes, goods, false rejects) by the truth
    truth: list[tuple[int, int, int, int]] = field(default_factory=list)
    frame_id: int = 0


def build_model(root: Path) -> LoadedModel:
    from converters.keys import KeyPaths, init_keys
    from converters.pipeline import build_bundle
    from converters.synth import generate_dataset
    from edge_agent.inference import load_and_check
    from edgeline.core.protocol.signing import TrustStore

    init_keys(root / "keys")
    generate_dataset(root / "data", per_class=150, seed=1)
    build_bundle(root / "data", root / "v1", name="plates", version=1, key_dir=root / "keys")
    return load_and_check(root / "v1", TrustStore.load(KeyPaths(root / "keys").trust))


def make_line(name: str, model: LoadedModel, root: Path, window: int, seed: int, epsilon: float | None = None) -> Line:
    clock = Clock()
    store = FeedbackStore(root / f"{name}-feedback.db", clock=clock, keep_results=window * 4)
    service = FeedbackService(store)
    agent = Agent(name, model, service)
    config = TelemetrySection(window_s=86400.0, window_frames=window, min_frames=20, epsilon=epsilon)
    outbox = Outbox(root / f"{name}-outbox.db", clock=clock)
    plugin = TelemetryPlugin(
        config, outbox=outbox, secret=SECRET, topics=Topics(), clock=clock, background=False, group="hall-1"
    )
    plugin.start(agent)
    return Line(name, agent, plugin, clock, np.random.default_rng(seed), np.random.default_rng(seed + 10_000))


def run_round(line: Line, n: int, start: float, dark: bool, share: float) -> list[TelemetryWindow]:
    from converters.synth import CLASSES, Conditions, Lighting, render_part

    cond = Conditions(lighting=Lighting(brightness=-40.0, contrast=0.85) if dark else Lighting())
    line.clock.t = start
    counts = [0, 0, 0, 0]
    model = line.agent.current_model
    for _ in range(n):
        defective = line.rng.random() < DEFECT_SHARE
        label = CLASSES[1 + int(line.rng.integers(len(CLASSES) - 1))] if defective else "ok"
        frame = render_part(label, line.rng, conditions=cond)
        r = inspect_frame(model, frame, line.frame_id, with_stats=True)
        v = r.verdict
        rid = f"{line.name}-{line.frame_id}"
        line.frame_id += 1
        passed = v.verdict == "ok"
        if defective:
            counts[0] += 1
            counts[1] += passed
        else:
            counts[2] += 1
            counts[3] += not passed
        rec: dict[str, Any] = {
            "type": "verdict",
            "result_id": rid,
            "part_id": rid,
            "verdict": v.verdict,
            "label": v.label,
        }
        rec |= {"confidence": v.confidence, "model": v.model, "model_version": v.model_version, "ts": line.clock()}
        line.agent.feedback.write_batch([rec])
        if line.operator.random() < share:  # the operator checks this part and says what it was
            answer = line.agent.feedback.submit(
                FeedbackRequest(truth="defect" if defective else "ok", result_id=rid), "station"
            )
            assert answer.ok, answer.error
        line.plugin.on_result(r)
        line.clock.t += PART_S
    line.plugin.tick()
    line.truth.append((counts[0], counts[1], counts[2], counts[3]))
    out = []
    for m in line.plugin.outbox.peek(100_000):
        if m.kind == "telemetry" and m.key not in line.sent:
            line.sent.add(m.key)
            out.append(parse_window(m.payload))
    return out


def face_value() -> Calibration:
    return Calibration(BIN_MIDS.copy(), 0.5, 0, np.zeros(len(BIN_MIDS), np.int64))


def true_rates(truth: list[tuple[int, int, int, int]]) -> tuple[float, float]:
    d, e, g, f = (sum(t[i] for t in truth) for i in range(4))
    return e / max(1, d), f / max(1, g)


def pp(a: float | None, b: float) -> float | None:
    return None if a is None else round(100 * abs(a - b), 2)


def signed_pp(a: float | None, b: float) -> float | None:
    return None if a is None else round(100 * (a - b), 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--normal", type=int, default=6, help="rounds before the darkening")
    ap.add_argument("--dark", type=int, default=8, help="rounds with the line 'dark' darkened")
    ap.add_argument("--window", type=int, default=200, help="parts per window")
    ap.add_argument("--feedback", type=float, default=0.05, help="share of parts an operator checks")
    ap.add_argument("--lookback", type=int, default=3, help="rounds of windows per evaluation")
    ap.add_argument("--escape-limit", type=float, default=None, help="default: twice the normal true rate")
    ap.add_argument("--false-reject-limit", type=float, default=None, help="default: twice the normal true rate")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--epsilon", type=float, default=None, help="Laplace noise on the windows' counts (none)")
    ap.add_argument(
        "--estimate-confidence",
        type=float,
        default=FieldLimits.estimate_confidence,
        help="one-sided confidence an estimate needs above a limit to open an alert",
    )
    ap.add_argument(
        "--pass-prior", choices=("identity", "flat", "select"), default="identity", help="calibration prior"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t_build = time.perf_counter()
        model = build_model(root)
        build_s = time.perf_counter() - t_build
        lines = {
            name: make_line(name, model, root, args.window, args.seed + i, args.epsilon) for i, name in enumerate(LINES)
        }
        by_pseudo = {pseudonym(name, SECRET)[:12]: name for name in LINES}
        store = TelemetryStore(root / "telemetry.db")
        round_s = args.window * PART_S
        rounds: list[dict[str, Any]] = []
        engine = AlertEngine(store)
        monitor: FieldMonitor | None = None
        reference: list[TelemetryWindow] = []
        ref_cal: Calibration | None = None
        ref_rates: dict[str, tuple[float, float]] = {}
        alerts: list[dict[str, Any]] = []
        t_run = time.perf_counter()
        for r in range(args.normal + args.dark):
            dark_now = r >= args.normal
            new: list[TelemetryWindow] = []
            for name, line in lines.items():
                new += run_round(line, args.window, T0 + r * round_s, dark_now and name == "dark", args.feedback)
            store.add_many(new)
            if r < args.normal:
                reference += new
            now = T0 + (r + 1) * round_s
            if r == args.normal - 1:  # the reference: the normal rounds' feedback, and the true rates
                ref_totals = accumulate(reference, "plates", lambda w: "all")[(1, "all")]
                ref_cal = calibrate(ref_totals, pass_prior=args.pass_prior)
                ref_rates = {n: true_rates(line.truth) for n, line in lines.items()}
                esc_all = statistics.mean(v[0] for v in ref_rates.values())
                fr_all = statistics.mean(v[1] for v in ref_rates.values())
                limits = FieldLimits(
                    escape=args.escape_limit or min(0.9, max(0.02, 2 * esc_all)),
                    false_reject=args.false_reject_limit or min(0.9, max(0.02, 2 * fr_all)),
                    scopes=("line",),
                    estimate_confidence=args.estimate_confidence,
                )
                monitor = FieldMonitor(
                    engine,
                    limits,
                    FieldSettings(pass_prior=args.pass_prior),
                    lookback_s=args.lookback * round_s + 1.0,
                    reference=(T0 - 1.0, now + 1.0),
                )
            if monitor is not None:
                for a in monitor.check(now):
                    parts = a.scope.split("/")
                    who = by_pseudo.get(parts[3], parts[3]) if len(parts) > 3 else a.scope
                    alerts.append(
                        {
                            "round": r,
                            "kind": a.kind,
                            "state": a.state,
                            "line": who,
                            "scope": a.scope,
                            "basis": a.details.get("basis"),
                            "summary": a.summary,
                        }
                    )
            if ref_cal is None:
                continue
            recent = [w for w in store_windows(store) if w.start >= now - args.lookback * round_s - 1]
            per_line = accumulate(recent, "plates", lambda w: w.device[:12])
            lookback_cal = calibrate(
                accumulate(recent, "plates", lambda w: "all")[(1, "all")], pass_prior=args.pass_prior
            )
            row: dict[str, Any] = {"round": r, "dark": dark_now, "lines": {}}
            for (_version, pseudo), totals in per_line.items():
                name = by_pseudo[pseudo]
                lookback_truth = lines[name].truth[-args.lookback :]
                te, tf = true_rates(lookback_truth)
                m_esc, m_fr = measured(totals)
                row["lines"][name] = line_figures(
                    totals, te, tf, m_esc.value, m_fr.value, m_esc.n, m_fr.n, ref_cal, lookback_cal, ref_rates[name]
                )
            rounds.append(row)
        run_s = time.perf_counter() - t_run
        store.close()
    return report(args, rounds, alerts, limits, build_s, run_s)


def store_windows(store: TelemetryStore) -> list[TelemetryWindow]:
    return [s.window for s in store.windows("plates")]


def line_figures(
    totals: FieldTotals,
    te: float,
    tf: float,
    m_esc: float | None,
    m_fr: float | None,
    n_def: int,
    n_good: int,
    ref_cal: Calibration,
    lookback_cal: Calibration,
    ref: tuple[float, float],
) -> dict[str, Any]:
    out: dict[str, Any] = {"true_escape": round(te, 4), "true_false_reject": round(tf, 4)}
    m = measured(totals)
    out["measured"] = {
        "escape": m_esc,
        "false_reject": m_fr,
        "defects": n_def,
        "goods": n_good,
        "escape_status": m[0].status,
        "false_reject_status": m[1].status,
    }
    for name, cal in (("cbpe_reference", ref_cal), ("cbpe_lookback", lookback_cal), ("face_value", face_value())):
        e = estimate(totals, cal)
        out[name] = {
            "escape": e.escape,
            "false_reject": e.false_reject,
            "escape_err_pp": pp(e.escape, te),
            "false_reject_err_pp": pp(e.false_reject, tf),
            "escape_bias_pp": signed_pp(e.escape, te),
            "false_reject_bias_pp": signed_pp(e.false_reject, tf),
        }
        for rate, truth in (("escape", te), ("false_reject", tf)):
            iv = e.interval(rate)
            out[name][f"{rate}_ci95"] = None if iv is None else [round(iv[0], 4), round(iv[1], 4)]
            out[name][f"{rate}_covers"] = None if iv is None else iv[0] <= truth <= iv[1]
            out[name][f"{rate}_status"] = e.status(rate)
    out["frozen_reference"] = {
        "escape": ref[0],
        "false_reject": ref[1],
        "escape_err_pp": pp(ref[0], te),
        "false_reject_err_pp": pp(ref[1], tf),
    }
    out["measured"] |= {"escape_err_pp": pp(m_esc, te), "false_reject_err_pp": pp(m_fr, tf)}
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _share(flags: list[bool | None]) -> float | None:
    known = [f for f in flags if f is not None]
    return round(sum(known) / len(known), 3) if known else None


def mean_err(rounds: list[dict[str, Any]], method: str, key: str, dark_line: bool, dark_phase: bool) -> float | None:
    vals = [
        f[method][key]
        for row in rounds
        if row["dark"] == dark_phase
        for name, f in row["lines"].items()
        if (name == "dark") == dark_line and f[method][key] is not None
    ]
    return round(statistics.mean(vals), 2) if vals else None


def report(
    args: argparse.Namespace,
    rounds: list[dict[str, Any]],
    alerts: list[dict[str, Any]],
    limits: FieldLimits,
    build_s: float,
    run_s: float,
) -> int:
    methods = ("cbpe_reference", "cbpe_lookback", "face_value", "frozen_reference", "measured")
    errors: dict[str, Any] = {}
    bias: dict[str, Any] = {}
    phases = (("normal_lines", True, False), ("dark_line_after", True, True), ("all_lines_before", False, False))
    for phase, dark_phase, dark_line in phases:
        errors[phase] = {
            m: {k: mean_err(rounds, m, k, dark_line, dark_phase) for k in ("escape_err_pp", "false_reject_err_pp")}
            for m in methods
        }
        bias[phase] = {
            m: {k: mean_err(rounds, m, k, dark_line, dark_phase) for k in ("escape_bias_pp", "false_reject_bias_pp")}
            for m in ("cbpe_reference", "cbpe_lookback", "face_value")
        }
    coverage: dict[str, Any] = {}
    for phase, dark_phase, dark_line in phases:
        cells = [
            f
            for row in rounds
            if row["dark"] == dark_phase
            for name, f in row["lines"].items()
            if (name == "dark") == dark_line
        ]
        coverage[phase] = {
            rate: {
                "estimate_interval_covers_truth": _share([f["cbpe_reference"][f"{rate}_covers"] for f in cells]),
                "estimate_stated": _share([f["cbpe_reference"][f"{rate}_status"] == "stated" for f in cells]),
                "measured_stated": _share([f["measured"][f"{rate}_status"] == "measured" for f in cells]),
                "measured_noisy": _share([f["measured"][f"{rate}_status"] == "noisy" for f in cells]),
            }
            for rate in ("escape", "false_reject")
        }
    series = {
        name: [
            {
                "round": row["round"],
                "true": [row["lines"][name]["true_escape"], row["lines"][name]["true_false_reject"]],
                "cbpe_reference": [
                    _r(row["lines"][name]["cbpe_reference"]["escape"]),
                    _r(row["lines"][name]["cbpe_reference"]["false_reject"]),
                ],
                "measured_n": [row["lines"][name]["measured"]["defects"], row["lines"][name]["measured"]["goods"]],
            }
            for row in rounds
            if name in row["lines"]
        ]
        for name in ("dark", "line-1")
    }
    firing = [a for a in alerts if a["state"] == "firing"]
    dark_first = min((a["round"] for a in firing if a["line"] == "dark" and a["kind"] != "field_slice"), default=None)
    slice_first = min((a["round"] for a in firing if a["line"] == "dark" and a["kind"] == "field_slice"), default=None)
    results = {
        "settings": {
            "normal_rounds": args.normal,
            "dark_rounds": args.dark,
            "parts_per_window": args.window,
            "feedback_share": args.feedback,
            "lookback_windows": args.lookback,
            "lines": len(LINES),
            "defect_share": DEFECT_SHARE,
            "escape_limit": limits.escape,
            "false_reject_limit": limits.false_reject,
            "seed": args.seed,
            "epsilon": args.epsilon,
            "pass_prior": args.pass_prior,
            "estimate_confidence": args.estimate_confidence,
        },
        "mean_abs_error_pp": errors,
        "mean_bias_pp": bias,
        "intervals": coverage,
        "series": series,
        "windows_until_field_alert": None if dark_first is None else dark_first - args.normal + 1,
        "windows_until_slice_alert": None if slice_first is None else slice_first - args.normal + 1,
        "windows_until_alert_by_kind": {
            kind: min(
                (a["round"] - args.normal + 1 for a in firing if a["line"] == "dark" and a["kind"] == kind),
                default=None,
            )
            for kind in ("field_escape", "field_false_reject", "field_slice")
        },
        "false_alerts_on_normal_lines_by_kind": {
            kind: sum(1 for a in firing if a["line"] != "dark" and a["kind"] == kind)
            for kind in ("field_escape", "field_false_reject", "field_slice")
        },
        "false_alerts_on_normal_lines": sum(1 for a in firing if a["line"] != "dark"),
        "alerts": alerts,
        "last_round": rounds[-1] if rounds else None,
        "model_build_s": round(build_s, 1),
        "run_s": round(run_s, 1),
    }
    ref_err = errors["dark_line_after"]["cbpe_reference"]
    floor = errors["dark_line_after"]["frozen_reference"]
    checks = {"dark_line_alerted": dark_first is not None}
    if ref_err["escape_err_pp"] is not None and floor["escape_err_pp"] is not None:
        results["dark_escape_error_vs_frozen_floor"] = round(
            ref_err["escape_err_pp"] / max(floor["escape_err_pp"], 1e-9), 3
        )
    if ref_err["false_reject_err_pp"] is not None and floor["false_reject_err_pp"] is not None:
        results["dark_false_reject_error_vs_frozen_floor"] = round(
            ref_err["false_reject_err_pp"] / max(floor["false_reject_err_pp"], 1e-9), 3
        )
    return emit("field", results, checks)


if __name__ == "__main__":
    raise SystemExit(main())
