"""The ONE path from a frame to a verdict: Preprocessor → LoadedModel → :func:`edge_agent.verdict.decide`.

The live loop (``edge_agent.runtime``), the local prediction API (``edge_agent.http_api``, its Open
Inference Protocol endpoints in ``edge_agent.oip``) and batch prediction (``edgeline predict``) all call
:func:`inspect_frame`, so they give identical verdicts on the same image. :func:`inspect_input` takes an
input that is already preprocessed through the same scoring and decision.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from edge_agent.anomaly_region import region_of
from edge_agent.bundle import open_bundle
from edge_agent.model import LoadedModel
from edge_agent.plugins import FrameResult
from edge_agent.preprocessing import input_stats
from edge_agent.registration import Placement, is_foreign
from edge_agent.verdict import Verdict, decide
from edgeline.core.protocol.signing import TrustStore

log = logging.getLogger(__name__)


def inspect_frame(
    model: LoadedModel,
    image: np.ndarray,
    frame_id: int,
    *,
    ts: float | None = None,
    with_stats: bool = False,
) -> FrameResult:
    """Preprocess, run and decide one frame. Raises ``PreprocessError`` or ``ModelLoadError``.

    ``input_stats`` are computed on the already prepared image (no second resize) when asked.
    """
    t0 = time.perf_counter()
    pre = model.preprocessor
    prepared, placement = pre.place(image)
    return _score(model, pre.features_of(prepared), placement, frame_id, t0, ts, prepared if with_stats else None)


def inspect_input(model: LoadedModel, x: np.ndarray, frame_id: int, *, ts: float | None = None) -> FrameResult:
    """Run and decide one ALREADY PREPROCESSED model input (the manifest's input shape, float32), with
    the scoring and decision of :func:`inspect_frame`. There is no frame behind it: the registration's
    part check does not apply, and a defect region is in the prepared image's pixels."""
    return _score(model, x, _IDENTITY, frame_id, time.perf_counter(), ts, None)


#: Where a prepared image lies in itself (for :func:`inspect_input`: no frame, no silhouette).
_IDENTITY = Placement(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (1.0, 1.0), (0.0, 0.0), None)


def _score(
    model: LoadedModel,
    x: np.ndarray,
    placement: Placement,
    frame_id: int,
    t0: float,
    ts: float | None,
    stats_of: np.ndarray | None,
) -> FrameResult:
    """The model run and the decision for one model input; ``input_stats`` of ``stats_of`` (the
    prepared image) when given, computed after the latency is taken, as before."""
    m = model.manifest
    out = model.run(x[None, ...])
    probs = out.probabilities[0]
    score = region = logit = None
    unknown = is_foreign(placement.silhouette, m.preprocessing.registration)
    if m.anomaly is not None and out.anomaly_score is not None and out.anomaly_global is not None:
        score = float(out.anomaly_score[0])
        logit = (score - m.anomaly.center) / m.anomaly.scale  # for the telemetry histogram
        glob = float(out.anomaly_global[0])
        unknown = unknown or not (np.isfinite(glob) and glob <= m.anomaly.unknown_global)
    verdict, label, conf, uncertain = decide(
        probs, m.labels, m.thresholds, operating_point=m.operating_point, unknown=unknown
    )
    if verdict == "defect" and out.anomaly_map is not None:
        region = region_of(out.anomaly_map[0], placement, m.preprocessing.size)
    latency_ms = (time.perf_counter() - t0) * 1000.0
    stats = input_stats(stats_of) if stats_of is not None else None
    v = Verdict(
        frame_id=frame_id,
        verdict=verdict,
        label=label,
        confidence=conf,
        uncertain=uncertain,
        model=m.name,
        model_version=m.version,
        latency_ms=latency_ms,
        ts=time.time() if ts is None else ts,
        anomaly_score=score,
        region=region,
    )
    return FrameResult(
        verdict=v, probabilities=probs, input_stats=stats, model_sha256=m.artifact.sha256, anomaly_logit=logit
    )


def load_and_check(
    bundle_dir: str | Path, trust: TrustStore, *, threads: int = 1, check_expiry: bool = True
) -> LoadedModel:
    """Verify a bundle (signature, hashes), load it into ONNX Runtime and run its self-test.

    Returns a model ready to hand to ``Agent.activate``. Raises a ``BundleError`` subclass
    (``SelfTestError`` for a failed self-test) or ``SignatureError``; never returns a half-checked
    model.
    """
    bundle = open_bundle(Path(bundle_dir), trust, check_expiry=check_expiry)
    model = LoadedModel.load(bundle.manifest, bundle.model_path, threads=threads)
    worst = model.self_test()
    log.info(
        "bundle %s: %s v%d loaded, self-test passed (max deviation %.2e)",
        bundle_dir,
        bundle.manifest.name,
        bundle.manifest.version,
        worst,
    )
    return model


def model_info(model: LoadedModel | None) -> dict[str, object] | None:
    if model is None:
        return None
    m = model.manifest
    return {"name": m.name, "version": m.version, "sha256": m.artifact.sha256, "labels": list(m.labels)}


def verdict_record(result: FrameResult, device_id: str, ref: str = "") -> dict[str, object]:
    """The JSON record a sink or an API client gets for one frame. No pixels, no features."""
    v = result.verdict
    # Built field by field: dataclasses.asdict deep-copies and costs ~10 us per frame.
    return {
        "type": "verdict",
        "device": device_id,
        "ref": ref,
        "frame_id": v.frame_id,
        "verdict": v.verdict,
        "label": v.label,
        "confidence": v.confidence,
        "uncertain": v.uncertain,
        "model": v.model,
        "model_version": v.model_version,
        "latency_ms": v.latency_ms,
        "ts": v.ts,
        "sha256": result.model_sha256,
        "anomaly_score": v.anomaly_score,
        "region": v.region.to_dict() if v.region is not None else None,
    }
