"""Models of the demo: the synthetic dataset and v1, built with the normal build pipeline
(:func:`converters.pipeline.build_bundle`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from converters.errors import ConverterError
from converters.pipeline import BuildResult, ProgressHook, build_bundle
from converters.synth import generate_dataset
from edgeline.core.protocol.manifest import Manifest
from edgeline.demo.errors import DemoError
from edgeline.demo.settings import DemoSettings
from edgeline.demo.workspace import Workspace

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
    """Training images (``dataset/``, the build pipeline holds a quarter out), JPEG like the cameras."""
    done = 0
    total = s.per_class * 4

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if done % 40 == 0 or done == total:
            report(f"rendering training images {done}/{total}")

    try:
        train = generate_dataset(ws.dataset, s.per_class, seed=s.seed, image_format="jpg", progress=tick)
    except ConverterError as exc:
        raise DemoError(f"cannot make the synthetic dataset: {exc}") from exc
    return dict(train.counts)


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


def model_facts(m: Manifest) -> dict[str, Any]:
    accuracy = m.metrics.get("accuracy")
    return {
        "version": m.version,
        "sha256": m.artifact.sha256,
        "quantization": m.quantization.mode,
        "size_bytes": m.artifact.size,
        "accuracy_holdout": round(accuracy, 4) if accuracy is not None else None,
        "labels": list(m.labels),
    }
