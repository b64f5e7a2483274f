"""Inspection-grade models on data the project did not tune on: escape and false reject on fresh parts.

Training sets come from each family of ``--families`` (seeds 70000+); the evaluation sets are fresh
parts with seeds and lighting never used in development, and the three extra defect kinds (crack,
stain, chip) no model was trained on. Every model is built by the real pipeline and served by the
agent's own path (:func:`edge_agent.inference.inspect_frame`): escape = defective parts with verdict
``ok``, false reject = good parts with verdict ``defect`` or ``unknown``. Per family: the build's own
choices (colour, turning, angle search, components) and its good-only model's latency beside
today's classifier; for the plate, the latency of all three kinds and int8 against float.

    python bench/bench_inspection.py --families plate,flange,bracket,hexnut,gasket,casting,pcb   # JSON on stdout
    python bench/bench_inspection.py --quick    # 150 + 150 evaluation parts, not 300 + 300
    python bench/bench_inspection.py --families casting,bracket,gasket --eval-parts 100
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.gate import GateConfig
from converters.inspection_build import build_inspection
from converters.keys import init_keys
from converters.line_gate import LineTargets
from converters.operating_point import auroc, rate
from converters.pipeline import build_bundle
from converters.synth import FAMILIES, Conditions, Lighting, generate_dataset, render_part
from edge_agent.inference import inspect_frame
from edge_agent.model import LoadedModel
from edge_agent.preprocessing import Preprocessor

TRAIN_DEFECTS = ("scratch", "dent", "missing_hole")
FRESH_DEFECTS = ("scratch", "dent", "missing_hole", "crack", "stain", "chip")
EVAL_LIGHT = Lighting(brightness=-18.0, contrast=0.9, vignette=0.15)


def fresh(family: str, n_good: int, n_bad: int, seed: int, light: Lighting) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    cond = Conditions(lighting=light, noise=3.5)
    frames, labels = [], []
    for _ in range(n_good):
        frames.append(render_part("ok", rng, conditions=cond, family=family))
        labels.append("ok")
    for i in range(n_bad):
        kind = FRESH_DEFECTS[i % len(FRESH_DEFECTS)]
        frames.append(render_part(kind, rng, conditions=cond, family=family))
        labels.append(kind)
    return frames, labels


def judge(model: LoadedModel, frames: list[np.ndarray], labels: list[str]) -> dict[str, object]:
    verdicts = [inspect_frame(model, f, i).verdict for i, f in enumerate(frames)]
    good = [v for v, lab in zip(verdicts, labels, strict=True) if lab == "ok"]
    bad = [(v, lab) for v, lab in zip(verdicts, labels, strict=True) if lab != "ok"]
    fr = rate(sum(v.verdict != "ok" for v in good), len(good))
    esc = rate(sum(v.verdict == "ok" for v, _ in bad), len(bad))
    per_kind = {}
    for kind in sorted({lab for _, lab in bad}):
        ks = [v for v, lab in bad if lab == kind]
        per_kind[kind] = {"escapes": sum(v.verdict == "ok" for v in ks), "n": len(ks)}
    ok_i = model.manifest.labels.index(model.manifest.thresholds.ok_label)
    pre = model.preprocessor
    x = np.stack([pre(f) for f in frames])
    d = 1.0 - model.run(x).probabilities[:, ok_i]
    is_good = np.array([lab == "ok" for lab in labels])
    # the figure: escape at the threshold where these fresh good parts reject 1%
    t1 = float(np.quantile(d[is_good], 0.99))
    esc1 = rate(int(np.sum(d[~is_good] <= t1)), int(np.sum(~is_good)))
    return {
        "escape_at_1pct_false_reject_fresh": {
            "events": esc1.events,
            "n": esc1.n,
            "value": esc1.value,
            "ci95": [esc1.low, esc1.high],
        },
        "false_reject": {"events": fr.events, "n": fr.n, "value": fr.value, "ci95": [fr.low, fr.high]},
        "escape": {"events": esc.events, "n": esc.n, "value": esc.value, "ci95": [esc.low, esc.high]},
        "escape_by_kind": per_kind,
        "unknown": sum(v.verdict == "unknown" for v in verdicts),
        "auroc_defect_score": auroc(d[is_good], d[~is_good]),
    }


def dataset(root: Path, family: str, n_good: int, n_defect: int, seed: int) -> Path:
    generate_dataset(root, per_class=n_good, seed=seed, classes=("ok", "dent"), family=family)
    shutil.rmtree(root / "dent")
    if n_defect:
        tmp = root.parent / f"{root.name}-defects"
        generate_dataset(tmp, per_class=n_defect, seed=seed + 1, classes=("ok", *TRAIN_DEFECTS), family=family)
        for kind in TRAIN_DEFECTS:
            shutil.copytree(tmp / kind, root / kind)
    return root


def latencies(models: dict[str, LoadedModel], frames: list[np.ndarray], rounds: int = 7) -> dict[str, float]:
    """Median per-frame milliseconds of each model through ``inspect_frame``, the models interleaved
    round by round (a loaded machine slows every model of a round alike)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            for i, f in enumerate(frames):
                inspect_frame(model, f, i)
            times[name].append((time.perf_counter() - t0) / len(frames) * 1000.0)
    return {name: float(np.median(v)) for name, v in times.items()}


def family_list(text: str) -> list[str]:
    """``--families``: comma-separated names of :data:`converters.synth.FAMILIES`, checked before any build."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAMILIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown part families {unknown or text!r}; known: {', '.join(FAMILIES)}")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="150 good + 150 defective evaluation parts, not 300 + 300")
    ap.add_argument(
        "--families",
        type=family_list,
        default="plate,flange",
        help=f"comma-separated part families to build and judge, of: {', '.join(FAMILIES)}",
    )
    ap.add_argument(
        "--eval-parts", type=int, default=None, help="good (and as many defective) evaluation parts per light"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n_eval = args.eval_parts or (150 if args.quick else 300)
    if n_eval < 10:
        ap.error("--eval-parts must be at least 10")
    work = Path(tempfile.mkdtemp(prefix="edgeline-bench-insp-"))
    keys = work / "keys"
    init_keys(keys)
    out: dict[str, object] = {
        "eval_parts": {
            "good": n_eval,
            "defective": n_eval,
            "defect_kinds": FRESH_DEFECTS,
            "other_light": EVAL_LIGHT.__dict__,
            "training_light": Lighting().__dict__,
        }
    }
    results: dict[str, object] = {}
    served: dict[str, LoadedModel] = {}
    for fi, family in enumerate(args.families):
        base = 91000 + 1000 * fi
        evals = {
            "training_light": fresh(family, n_eval, n_eval, base, Lighting()),
            "other_light": fresh(family, n_eval, n_eval, base + 500, EVAL_LIGHT),
        }
        frames = evals["other_light"][0]
        for scenario, n_good, n_def in (("good_only", 200, 0), ("rare_defects", 300, 5)):
            t0 = time.perf_counter()
            data = dataset(work / f"{family}-{scenario}", family, n_good, n_def, seed=70000 + n_good + n_def)
            res = build_inspection(
                data,
                work / f"b-{family}-{scenario}",
                key_dir=keys,
                force_unverified=True,
                targets=LineTargets(),
                name=f"{family}-{scenario}",
            )
            m = res.manifest
            model = LoadedModel.load(m, res.bundle_dir / m.artifact.filename)
            served[f"{family}-{scenario}"] = model
            results[f"{family}/{scenario}"] = {
                "build_seconds": round(time.perf_counter() - t0, 1),
                "kind": res.kind,
                "gate": {"passed": not m.unverified, "failures": list(m.unverified)},
                "build_figures": {
                    k: res.metrics.get(k)
                    for k in ("false_reject", "false_reject_high", "escape", "escape_high", "auroc")
                },
                "choices": {
                    k: v
                    for k, v in res.report.get("registration", {}).items()
                    if k in ("angle_search", "colour", "turn_every_axis", "isotropic_window", "components_found")
                }
                | {"components": res.manifest.lineage.get("training", {}).get("components")},
                "fresh": {light: judge(model, f, lab) for light, (f, lab) in evals.items()},
            }
        # balanced: the inspection model (auto -> hybrid) against today's classifier
        data = work / f"{family}-balanced"
        generate_dataset(data, per_class=150, seed=71000, classes=("ok", *TRAIN_DEFECTS), family=family)
        hyb = build_inspection(data, work / f"b-{family}-hybrid", key_dir=keys, force_unverified=True, name="hyb")
        cls = build_bundle(
            data,
            work / f"b-{family}-classifier",
            key_dir=keys,
            name="cls",
            gate=GateConfig(max_accuracy_drop_pp=100.0, min_label_agreement=0.0),
        )
        mh = LoadedModel.load(hyb.manifest, hyb.bundle_dir / hyb.manifest.artifact.filename)
        mc = LoadedModel.load(cls.manifest, cls.model_path)
        # every family's good-only model against today's classifier, same frames, interleaved rounds
        # (a colour grid has three times the pixels of a grey one)
        fam_lat = latencies({"anomaly": served[f"{family}-good_only"], "classifier": mc}, frames[:60], rounds=5)
        results[f"{family}/latency_ms_per_frame"] = {
            "anomaly_good_only": round(fam_lat["anomaly"], 3),
            "todays_classifier": round(fam_lat["classifier"], 3),
            "anomaly_over_classifier": round(fam_lat["anomaly"] / fam_lat["classifier"], 2),
        }
        results[f"{family}/balanced"] = {
            "inspection_hybrid": {
                "gate": {"passed": not hyb.manifest.unverified, "failures": list(hyb.manifest.unverified)},
                "fresh": {light: judge(mh, f, lab) for light, (f, lab) in evals.items()},
            },
            "todays_classifier": {"fresh": {light: judge(mc, f, lab) for light, (f, lab) in evals.items()}},
        }
        if family == "plate":
            served["classifier"], served["hybrid"] = mc, mh
            lat = latencies({"anomaly": served["plate-good_only"], "classifier": mc, "hybrid": mh}, frames[:100])
            anomaly_ms, classifier_ms, hybrid_ms = lat["anomaly"], lat["classifier"], lat["hybrid"]
            b = work / "b-plate-good_only"
            float_b = build_inspection(
                work / "plate-good_only", work / "b-float", key_dir=keys, quantization="float", force_unverified=True
            )
            mf = LoadedModel.load(float_b.manifest, float_b.bundle_dir / float_b.manifest.artifact.filename)
            pre = Preprocessor(mf.manifest.preprocessing)
            x = np.stack([pre(f) for f in frames])
            s8 = served["plate-good_only"].run(x).anomaly_score
            sf = mf.run(x).anomaly_score
            assert s8 is not None and sf is not None
            out["latency_ms_per_frame"] = {
                "anomaly": round(anomaly_ms, 3),
                "hybrid": round(hybrid_ms, 3),
                "todays_classifier": round(classifier_ms, 3),
                "anomaly_over_classifier": round(anomaly_ms / classifier_ms, 2),
                "hybrid_over_classifier": round(hybrid_ms / classifier_ms, 2),
                "floor": "today's classifier bundle through the same inspect_frame, same frames, same run",
            }
            out["int8_vs_float"] = {
                "int8_bytes": (b / "model.onnx").stat().st_size,
                "float_bytes": (float_b.bundle_dir / "model.onnx").stat().st_size,
                "score_max_abs_diff": float(np.max(np.abs(s8 - sf))),
                "score_median_rel_diff": float(np.median(np.abs(s8 - sf) / np.maximum(np.abs(sf), 1e-6))),
                "verdict_agreement_at_threshold": float(
                    np.mean(
                        [
                            inspect_frame(served["plate-good_only"], f, 0).verdict.verdict
                            == inspect_frame(mf, f, 0).verdict.verdict
                            for f in frames
                        ]
                    )
                ),
            }
    out["results"] = results
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
