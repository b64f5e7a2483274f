"""Models of the demo: the synthetic dataset, v1 built with the normal build pipeline
(:func:`converters.pipeline.build_bundle`), and offline evaluation of a bundle on labelled images
under a given lighting (ONNX Runtime through the agent's own model loader)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloud_registry.demo.errors import DemoError
from cloud_registry.demo.settings import DemoSettings
from cloud_registry.demo.workspace import Workspace
from converters.dataset import scan_image_folder
from converters.errors import ConverterError
from converters.pipeline import BuildResult, ProgressHook, build_bundle
from converters.synth import apply_lighting, generate_dataset
from edge_agent.bundle import open_bundle
from edge_agent.errors import EdgeAgentError
from edge_agent.model import LoadedModel
from edge_agent.protocol.signing import TrustStore
from edge_agent.sources import read_image

log = logging.getLogger(__name__)

MODEL_NAME = "line-inspection"
Report = Callable[[str], None]


class HookToDetail(ProgressHook):
    """Build-pipeline progress as one line of text for the live display."""

    def __init__(self, report: Report, prefix: str) -> None:
        self.report = report
        self.prefix = prefix
        self.name = ""
        self.total: int | None = None
        self.done = 0

    def stage(self, name: str, total: int | None = None) -> None:
        self.name, self.total, self.done = name, total, 0
        self.report(f"{self.prefix}: {name}")

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.total and (self.done % 25 == 0 or self.done == self.total):
            self.report(f"{self.prefix}: {self.name} {self.done}/{self.total}")


def make_datasets(ws: Workspace, s: DemoSettings, report: Report) -> dict[str, Any]:
    """Training images (``dataset/``) and a separate held-out set (``holdout/``), JPEG like the cameras."""
    done = 0
    total = s.per_class * 4

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if done % 40 == 0 or done == total:
            report(f"rendering training images {done}/{total}")

    try:
        train = generate_dataset(ws.dataset, s.per_class, seed=s.seed, image_format="jpg", progress=tick)
        hold = generate_dataset(ws.holdout, max(20, s.per_class // 3), seed=s.seed + 1000, image_format="jpg")
    except ConverterError as exc:
        raise DemoError(f"cannot make the synthetic dataset: {exc}") from exc
    return {"train": train.counts, "holdout": hold.counts}


def build_v1(ws: Workspace, s: DemoSettings, report: Report) -> BuildResult:
    try:
        return build_bundle(
            ws.dataset,
            ws.bundle("v1"),
            estimator="mlp",
            name=MODEL_NAME,
            version=1,
            key_dir=ws.keys,
            seed=s.seed,
            lineage={"built_by": "edgeline demo", "note": "trained on the normal line lighting"},
            progress=HookToDetail(report, "v1"),
        )
    except ConverterError as exc:
        raise DemoError(f"building v1 failed: {exc}") from exc


def model_facts(result: BuildResult) -> dict[str, Any]:
    m = result.manifest
    return {
        "version": m.version,
        "sha256": m.artifact.sha256,
        "quantization": m.quantization.mode,
        "size_bytes": m.artifact.size,
        "accuracy_holdout": round(result.evaluation.accuracy, 4),
        "labels": list(m.labels),
        "build_seconds": result.report.get("seconds"),
    }


@dataclass(frozen=True)
class Labelled:
    frames: list[np.ndarray]
    labels: list[str]


def load_holdout(ws: Workspace) -> Labelled:
    folder = scan_image_folder(ws.holdout)
    frames: list[np.ndarray] = []
    labels: list[str] = []
    for path, target in zip(folder.paths, folder.targets, strict=True):
        img = read_image(path)
        if img is None:
            raise DemoError(f"held-out image {path} is unreadable")
        frames.append(img)
        labels.append(folder.classes[target])
    return Labelled(frames, labels)


def accuracy(bundle_dir: Path, trust: TrustStore, data: Labelled, lighting: tuple[float, float] = (0.0, 1.0)) -> float:
    """Accuracy of a bundle on ``data`` rendered under ``lighting`` (brightness offset, contrast gain)."""
    try:
        b = open_bundle(bundle_dir, trust, check_expiry=False)
        model = LoadedModel.load(b.manifest, b.model_path)
        labels = b.manifest.labels
        hits = 0
        for frame, truth in zip(data.frames, data.labels, strict=True):
            img = apply_lighting(frame, lighting[0], lighting[1]) if lighting != (0.0, 1.0) else frame
            hits += labels[int(np.argmax(model.predict_frame(img)))] == truth
    except (EdgeAgentError, ConverterError) as exc:
        raise DemoError(f"cannot evaluate {bundle_dir}: {exc}") from exc
    return hits / max(1, len(data.labels))
