"""Close the loop: sustained drift -> a retrained next version -> gates -> registry -> canary rollout.

1. :func:`plan_retrain` (:mod:`.retrain_plan`) reads the drift evidence and measures the field's
   lighting, or raises :class:`NoSustainedDrift`.
2. :func:`retrain` trains vN+1 on the labeled data on hand with augmentation matched to that shift
   (``converters.synth.lighting_augment`` around the measured lighting, the originals kept), through
   the normal build pipeline and its quality gate (quantization, parity, accuracy).
3. A drift gate: the new model and its parent are evaluated on the held-out images transformed the
   same way (the measured lighting) and untransformed; the new one must do better on the former and
   not lose more than ``max_normal_drop_pp`` on the latter. Otherwise nothing is registered.
4. The bundle is registered as vN+1 with lineage pointing to the drift evidence (model, version,
   windows, time range, PSI per statistic, the measured shift) and, by policy, a canary rollout starts.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud_registry.telemetry.retrain_plan import (
    MatchedLighting,
    NoSustainedDrift,
    RetrainError,
    RetrainPlan,
    RetrainPolicy,
    fit_lighting,
    plan_retrain,
)
from edge_agent.model import LoadedModel
from edgeline.core.protocol.manifest import Manifest

log = logging.getLogger(__name__)

#: ``start_rollout(model_ref, policy) -> rollout id``
RolloutStarter = Callable[[str, RetrainPolicy], str]


@dataclass
class RetrainResult:
    plan: RetrainPlan
    bundle_dir: Path
    version: int
    accuracy: dict[str, float] = field(default_factory=dict)
    registered: bool = False
    rollout_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.plan.model,
            "parent_version": self.plan.parent_version,
            "version": self.version,
            "bundle": str(self.bundle_dir),
            "matched_lighting": asdict(self.plan.lighting),
            "accuracy": self.accuracy,
            "registered": self.registered,
            "rollout": self.rollout_id,
        }


def held_out(dataset_dir: Path, *, test_size: float, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """The held-out images of the build pipeline's split (same stratified split, same seed)."""
    from converters.dataset import read_image, scan_image_folder

    folder = scan_image_folder(Path(dataset_dir), min_classes=1)
    te = held_out_indices(Path(dataset_dir), test_size=test_size, seed=seed)
    return [read_image(folder.paths[i]) for i in te], [folder.classes[folder.targets[i]] for i in te]


def held_out_indices(dataset_dir: Path, *, test_size: float, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    from converters.dataset import scan_image_folder

    folder = scan_image_folder(Path(dataset_dir), min_classes=1)
    idx = np.arange(len(folder))
    targets = np.asarray(folder.targets)
    stratify = targets if len(set(folder.targets)) > 1 and np.bincount(targets).min() >= 2 else None
    _, te = train_test_split(idx, test_size=test_size, stratify=stratify, random_state=seed)
    return np.sort(te)


def training_sample(dataset_dir: Path, n: int = 48, seed: int = 0) -> list[np.ndarray]:
    """``n`` images of the labeled data, drawn evenly with a fixed seed (for fitting the lighting)."""
    from converters.dataset import read_image, scan_image_folder

    folder = scan_image_folder(Path(dataset_dir))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(folder), size=min(n, len(folder)), replace=False)
    return [read_image(folder.paths[i]) for i in sorted(pick)]


def accuracy(model: LoadedModel, images: list[np.ndarray], labels: list[str]) -> float:
    """Accuracy of ``model`` on raw frames through the device's preprocessing and ONNX Runtime.

    For inspection bundles (an operating point): the share of parts whose verdict is right in the
    line's terms (good parts passed; defective parts not passed), through the agent's own path."""
    m = model.manifest
    if m.operating_point is not None:
        from edge_agent.inference import inspect_frame

        ok = m.thresholds.ok_label
        right = [
            (inspect_frame(model, img, i).verdict.verdict == "ok") == (lab == ok)
            for i, (img, lab) in enumerate(zip(images, labels, strict=True))
        ]
        return float(np.mean(right))
    x = model.preprocessor.batch(images)
    top = model.predict_features(x).argmax(axis=1)
    names = model.manifest.labels
    return float(np.mean([names[i] == lab for i, lab in zip(top, labels, strict=True)]))


def _load(manifest: Manifest, data: bytes) -> LoadedModel:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        return LoadedModel.load(manifest, path)


def retrain(
    plan: RetrainPlan,
    dataset_dir: Path,
    out_dir: Path,
    *,
    key_dir: Path,
    parent: tuple[Manifest, bytes],
    policy: RetrainPolicy | None = None,
    estimator: str = "mlp",
    seed: int = 0,
    test_size: float = 0.25,
    register: Callable[[Path, int], object] | None = None,
    start_rollout: RolloutStarter | None = None,
    force: bool = False,
    progress: Any = None,
) -> RetrainResult:
    """Train, gate and (when ``register`` is given) register vN+1; start a rollout by policy."""
    from converters.errors import ConverterError
    from converters.pipeline import build_bundle

    pol = policy or RetrainPolicy()
    try:
        sample = training_sample(Path(dataset_dir), seed=seed)
        plan.lighting, plan.fit_cost = fit_lighting(plan.field_hist, sample, parent[0].preprocessing, plan.lighting)
        log.info("lighting fitted to the field: %s (closed form %s)", plan.lighting, plan.closed_form)
        if parent[0].anomaly is not None:
            built = _retrain_inspection(
                plan,
                pol,
                Path(dataset_dir),
                Path(out_dir),
                Path(key_dir),
                parent[0],
                estimator=estimator,
                seed=seed,
                test_size=test_size,
                force=force,
                progress=progress,
            )
        else:
            built = build_bundle(
                Path(dataset_dir),
                Path(out_dir),
                estimator=estimator,
                name=plan.model,
                version=plan.next_version,
                key_dir=Path(key_dir),
                augment=plan.lighting.augment(pol),
                augment_copies=pol.augment_copies,
                seed=seed,
                test_size=test_size,
                lineage=plan.lineage(pol),
                force=force,
                progress=progress,
            )
        images, labels = held_out(Path(dataset_dir), test_size=test_size, seed=seed)
    except ConverterError as exc:
        raise RetrainError(f"retraining {plan.model} v{plan.next_version} failed: {exc}") from exc
    shifted = [plan.lighting.apply(img) for img in images]
    new = LoadedModel.load(built.manifest, Path(built.bundle_dir) / built.manifest.artifact.filename)
    old = _load(*parent)
    acc = {
        "parent_drifted": accuracy(old, shifted, labels),
        "new_drifted": accuracy(new, shifted, labels),
        "parent_normal": accuracy(old, images, labels),
        "new_normal": accuracy(new, images, labels),
    }
    result = RetrainResult(plan, built.bundle_dir, plan.next_version, acc)
    gain = (acc["new_drifted"] - acc["parent_drifted"]) * 100
    drop = (acc["parent_normal"] - acc["new_normal"]) * 100
    if gain <= pol.min_gain_pp or drop > pol.max_normal_drop_pp:
        raise RetrainError(
            f"drift gate refused {plan.model} v{plan.next_version}: on drifted held-out images "
            f"{acc['new_drifted']:.3f} vs parent {acc['parent_drifted']:.3f} (need > +{pol.min_gain_pp} pp), "
            f"on normal ones {acc['new_normal']:.3f} vs {acc['parent_normal']:.3f} "
            f"(may drop at most {pol.max_normal_drop_pp} pp); not registered"
        )
    if register is not None:
        register(built.bundle_dir, plan.parent_version)
        result.registered = True
    if start_rollout is not None and pol.rollout_target and result.registered:
        result.rollout_id = start_rollout(f"{plan.model}@{plan.next_version}", pol)
    log.info("retrained %s v%d: %s", plan.model, plan.next_version, acc)
    return result


def _retrain_inspection(
    plan: RetrainPlan,
    pol: RetrainPolicy,
    dataset_dir: Path,
    out_dir: Path,
    key_dir: Path,
    parent: Manifest,
    *,
    estimator: str,
    seed: int,
    test_size: float,
    force: bool,
    progress: Any,
) -> Any:
    """Re-fit an inspection model (good-part model, and the classifier where the parent had one)
    with augmentation matched to the field's lighting; the drift gate's held-out images are kept out
    of training so it judges the new model on parts it never saw."""
    from converters.dataset import scan_image_folder
    from converters.inspection_build import build_inspection
    from converters.line_gate import LineTargets

    folder = scan_image_folder(dataset_dir, min_classes=1)
    held = held_out_indices(dataset_dir, test_size=test_size, seed=seed)
    op = parent.operating_point
    targets = LineTargets()
    if op is not None and op.target == "max_false_reject":
        targets = LineTargets(max_false_reject=op.target_value)
    has_classifier = any(label not in (parent.thresholds.ok_label, "anomaly") for label in parent.labels)
    return build_inspection(
        dataset_dir,
        out_dir,
        kind="hybrid" if has_classifier else "anomaly",
        targets=targets,
        estimator=estimator,
        name=plan.model,
        version=plan.next_version,
        key_dir=key_dir,
        augment=plan.lighting.augment(pol),
        augment_copies=pol.augment_copies,
        seed=seed,
        lineage=plan.lineage(pol),
        thresholds=parent.thresholds,
        exclude=[folder.paths[i] for i in held],
        force=force,
        progress=progress,
    )


__all__ = [
    "MatchedLighting",
    "NoSustainedDrift",
    "RetrainError",
    "RetrainPlan",
    "RetrainPolicy",
    "RetrainResult",
    "RolloutStarter",
    "accuracy",
    "fit_lighting",
    "held_out",
    "held_out_indices",
    "plan_retrain",
    "retrain",
    "training_sample",
]
