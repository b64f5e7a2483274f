"""Retraining from drift evidence: read how the drifted line's images differ from the training images
(the brightness offset and contrast ratio of the telemetry histograms, :func:`field_shift`), turn that
into a lighting transformation, train v2 on the labelled data on hand plus copies augmented over the
range from normal to the field's lighting, and gate it: v2 must beat v1 on held-out images transformed
the same way, and must not lose on normal images (it goes to every line).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cloud_registry.demo.cloud import DemoCloud
from cloud_registry.demo.errors import DemoError
from cloud_registry.demo.models import MODEL_NAME, HookToDetail, Labelled, Report, accuracy
from cloud_registry.demo.settings import DemoSettings
from cloud_registry.demo.workspace import Workspace
from cloud_registry.errors import RegistryError
from cloud_registry.telemetry.drift_report import FieldShift, build_report, field_shift
from converters.errors import ConverterError
from converters.pipeline import BuildResult, build_bundle
from converters.synth import lighting_augment

log = logging.getLogger(__name__)

#: v2 may lose at most this much accuracy on normal images against v1
MAX_CLEAN_LOSS = 0.05


@dataclass(frozen=True)
class Retrained:
    result: BuildResult
    shift: FieldShift
    lighting: tuple[float, float]
    augment: dict[str, list[float]]
    gate: dict[str, Any]


def lighting_of(shift: FieldShift) -> tuple[float, float]:
    """(brightness offset in grey levels, contrast gain) that maps the reference images onto the field.

    The lighting model is ``v' = (v - 128) * c + 128 + b``: the mean moves to ``(m - 128) * c + 128 + b``
    and the standard deviation scales by ``c``, so ``c`` is the contrast ratio and ``b`` follows from the
    two means (clipping at black makes this an estimate, which is why the augmentation spans a range)."""
    ev = shift.evidence["brightness"]
    ref = 255.0 * float(ev["reference"])
    field = 255.0 * float(ev["field"])
    c = min(max(float(shift.contrast_ratio), 0.2), 3.0)
    b = field - 128.0 - c * (ref - 128.0)
    return round(max(-200.0, min(200.0, b)), 1), round(c, 3)


def augmentation_range(lighting: tuple[float, float]) -> dict[str, list[float]]:
    b, c = lighting
    return {
        "brightness": [round(min(b, 0.0) - 20.0, 1), round(max(b, 0.0) + 10.0, 1)],
        "contrast": [round(max(0.2, min(c, 1.0) - 0.1), 3), round(max(c, 1.0) + 0.05, 3)],
    }


def evidence_since(cloud: DemoCloud, line: str, version: int, since: float) -> FieldShift:
    model = cloud.registry.store.get_version(MODEL_NAME, version)
    reference = cloud.registry.manifest(model).reference
    try:
        reports = build_report(
            cloud.telemetry,
            MODEL_NAME,
            version=version,
            by_group=True,
            since=since,
            reference_for=lambda _name, _ver: reference,
        )
        report = next((r for r in reports if r.group == line), None)
        if report is None:
            raise DemoError(f"no telemetry of {line} on v{version} since the drift began")
        return field_shift(report)
    except RegistryError as exc:
        raise DemoError(f"cannot read the drift evidence of {line}: {exc}") from exc


def retrain(
    cloud: DemoCloud,
    ws: Workspace,
    s: DemoSettings,
    holdout: Labelled,
    *,
    line: str,
    parent: int,
    since: float,
    report: Report,
) -> Retrained:
    report("reading the drift evidence from telemetry")
    shift = evidence_since(cloud, line, parent, since)
    light = lighting_of(shift)
    aug = augmentation_range(light)
    lineage = {
        "parent_version": parent,
        "built_by": "edgeline demo (retraining from drift evidence)",
        "drift_evidence": {**shift.evidence, "estimated_lighting": {"brightness": light[0], "contrast": light[1]}},
        "augmentation": aug,
    }
    try:
        result = build_bundle(
            ws.dataset,
            ws.bundle(f"v{parent + 1}"),
            estimator="mlp",
            name=MODEL_NAME,
            version=parent + 1,
            key_dir=ws.keys,
            seed=s.seed,
            augment=lighting_augment(
                (aug["brightness"][0], aug["brightness"][1]), (aug["contrast"][0], aug["contrast"][1])
            ),
            augment_copies=1,
            lineage=lineage,
            progress=HookToDetail(report, f"v{parent + 1}"),
        )
    except ConverterError as exc:
        raise DemoError(f"retraining failed: {exc}") from exc
    report("gate: v1 and v2 on held-out images, normal and transformed like the field")
    trust = cloud.trust
    v1_dir, v2_dir = ws.bundle(f"v{parent}"), result.bundle_dir
    figures = {
        "v1_field": accuracy(v1_dir, trust, holdout, light),
        "v2_field": accuracy(v2_dir, trust, holdout, light),
        "v1_clean": accuracy(v1_dir, trust, holdout),
        "v2_clean": accuracy(v2_dir, trust, holdout),
    }
    passed = (
        figures["v2_field"] >= figures["v1_field"] + s.min_gain
        and figures["v2_clean"] >= figures["v1_clean"] - MAX_CLEAN_LOSS
    )
    gate = {
        **{k: round(v, 4) for k, v in figures.items()},
        "rule": f"v2 beats v1 by >= {s.min_gain:.2f} on field-like images and loses <= {MAX_CLEAN_LOSS:.2f} on normal",
        "images": len(holdout.labels),
        "passed": passed,
    }
    if not passed:
        raise DemoError(f"v{parent + 1} failed the retraining gate: {gate}")
    return Retrained(result, shift, light, aug, gate)
