"""The device's own decision thresholds (``[decision]``) over a model's: a copy of the loaded model
whose manifest carries them, sharing its ONNX Runtime session (nothing is loaded again)."""

from __future__ import annotations

import dataclasses

from edge_agent.model import LoadedModel
from firmware_configs.remote_config_section import DecisionSection


def with_decision(model: LoadedModel, decision: DecisionSection) -> LoadedModel:
    """``model`` as it decides under ``decision`` (``model`` itself when nothing is overridden)."""
    if decision.empty:
        return model
    m = model.manifest
    update: dict[str, object] = {}
    op = m.operating_point
    if op is not None and (decision.threshold is not None or decision.review is not None):
        threshold = op.threshold if decision.threshold is None else decision.threshold
        review = min(op.review if decision.review is None else decision.review, threshold)
        update["operating_point"] = op.model_copy(update={"threshold": threshold, "review": review})
    if decision.defect_min_confidence is not None:
        update["thresholds"] = m.thresholds.model_copy(update={"defect_min_confidence": decision.defect_min_confidence})
    if not update:
        return model
    return dataclasses.replace(model, manifest=m.model_copy(update=update))
