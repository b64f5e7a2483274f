"""The inspection build's last step: the signed bundle (self-test vectors, reference histograms,
metrics, lineage, operating point) and the build report (JSON and PNG)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from converters import inspection_report
from converters.dataset import dataset_sha256
from converters.inspection_steps import DataPlan, Exported, FeaturePlan, Operating, model_scores
from converters.keys import SigningKey
from converters.line_gate import LineTargets
from converters.lineage import code_lineage
from converters.operating_point import auroc, curve
from converters.packaging import finite_metrics, write_signed_bundle
from converters.reference import build_reference, histogram, selftest_vectors
from edge_agent.preprocessing import Preprocessor
from edge_agent.telemetry.windows import ANOMALY_EDGES
from edgeline.core.protocol.manifest import Manifest, OperatingPoint, PreprocessSpec, Target, Thresholds

log = logging.getLogger(__name__)


@dataclass
class Signed:
    manifest: Manifest
    metrics: dict[str, float]
    report_json: Path
    report_png: Path
    doc: dict[str, Any]


def sign_and_report(
    out: Path,
    rep_dir: Path,
    data: DataPlan,
    fp: FeaturePlan,
    op: Operating,
    ex: Exported,
    *,
    failures: list[str],
    key: SigningKey,
    name: str,
    version: int,
    targets: LineTargets,
    thresholds: Thresholds,
    target: Target | None,
    valid_days: float,
    lineage: dict[str, Any] | None,
    estimator: str,
    params: dict[str, Any] | None,
    seed: int,
    t_start: float,
) -> Signed:
    """Write the signed bundle to ``out`` and the report to ``rep_dir``."""
    feats, spec, chosen = fp.feats, fp.spec, ex.chosen
    classes = data.classes
    frames = [f for c in sorted(feats.samples) for f in feats.samples[c]]
    frame_labels = [classes[c] for c in sorted(feats.samples) for _ in feats.samples[c]]
    vectors = selftest_vectors(chosen.model, spec, frames, frame_labels)
    logits = (op.oof.score - op.cal.center) / op.cal.scale  # every image, like the confidence and class-mix references
    reference = build_reference(feats.stats, op.oof_probs.astype(np.float32), ex.labels).model_copy(
        update={"anomaly_score": histogram(logits, ANOMALY_EDGES)}
    )
    opoint = OperatingPoint(
        threshold=op.threshold, review=op.review, target=targets.operate_for, target_value=targets.target_value
    )
    d, is_good = op.d, op.is_good
    fr, esc = op.honest.false_reject, op.honest.escape
    metrics = finite_metrics(
        {
            "false_reject": fr.value,
            "false_reject_high": fr.high,
            "false_reject_n": fr.n,
            "escape": esc.value,
            "escape_high": esc.high,
            "escape_n": esc.n,
            "auroc": auroc(d[is_good], d[~is_good]),
            "threshold": op.threshold,
            "int8_verdict_agreement": ex.agree,
            "int8_max_score_diff": ex.score_diff,
            "size_ratio": chosen.report.size_ratio,
            "train_rows": len(feats.y),
            "images": len(data.folder),
        }
    )
    augment = fp.augment
    lineage_doc: dict[str, Any] = {
        "dataset": {
            "sha256": dataset_sha256(data.folder, feats.digests),
            "roots": [str(r) for r in data.folder.roots],
            "counts": data.counts,
            "files": len(data.folder),
        },
        "training": {
            "kind": data.chosen_kind,
            "estimator": estimator if data.cls_classes else None,
            "components": ex.final.good.k,
            "folds": op.oof.folds,
            "seed": seed,
            "registration": fp.reg_notes,
            "overrides": params or {},
            "augment": getattr(augment, "__qualname__", repr(augment)) if augment else None,
            "augmented_rows": feats.augmented,
            "fit": ex.final.fit_notes,
        },
        **code_lineage(),
        **(lineage or {}),
    }
    pre = Preprocessor(spec)
    manifest = write_signed_bundle(
        out,
        chosen.model,
        key=key,
        name=name,
        version=version,
        spec=spec,
        input_shape=pre.output_shape,
        labels=ex.labels,
        selftest=_with_scores(vectors, chosen.model, spec),
        quant=chosen.report,
        reference=reference,
        metrics=metrics,
        lineage=lineage_doc,
        thresholds=thresholds,
        target=target,
        valid_days=valid_days,
        decision={"anomaly": ex.anomaly, "operating_point": opoint, "unverified": tuple(failures)},
    )
    doc = inspection_report.build_doc(
        name=name,
        version=version,
        kind=data.chosen_kind,
        line=op.line,
        at_threshold=op.at_threshold,
        failures=failures,
        warnings=data.warnings,
        threshold=op.threshold,
        review=op.review,
        targets=targets,
        curve=curve(d[is_good], d[~is_good], op.unknown[is_good], op.unknown[~is_good]),
        auroc=metrics.get("auroc"),
        counts=data.counts,
        registration=fp.reg_notes,
        quant=chosen.report.to_dict(),
        fidelity={"verdict_agreement": ex.agree, "max_score_diff": ex.score_diff, **chosen.gate.to_dict()},
        unknown_limit=op.limit,
        seconds=round(time.perf_counter() - t_start, 2),
        bundle=str(out),
    )
    rjson = inspection_report.write_json(rep_dir / "report.json", doc)
    rpng = inspection_report.write_png(
        rep_dir / "report.png",
        doc,
        data.folder.paths,
        op.img_target,
        data.ok,
        d,
        op.oof.maps,
        op.threshold,
        op.unknown,
    )
    log.info(
        "bundle %s v%d (%s) written to %s: %s",
        name,
        version,
        data.chosen_kind,
        out,
        "; ".join([f"false reject {fr.text()}", f"escape {esc.text()}"]),
    )
    return Signed(manifest, metrics, rjson, rpng, doc)


def _with_scores(vectors: list[Any], model: bytes, spec: PreprocessSpec) -> list[Any]:
    """Self-test vectors with the shipped model's anomaly score on each stored frame."""
    pre = Preprocessor(spec)
    x = np.stack([pre(v.image) for v in vectors])
    scores = model_scores(model, x)
    return [replace(v, anomaly_score=float(s)) for v, s in zip(vectors, scores, strict=True)]
