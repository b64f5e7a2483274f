"""Session fixtures for the build pipeline: one small synthetic dataset and one trained bundle per
estimator, shared by every test (training is the expensive part; the full dataset is for the bench)."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.gate import GateConfig
from converters.pipeline import BuildResult, build_bundle
from converters.synth import Lighting, generate_dataset

#: Figures on 100 images per class are too coarse to gate on (one row is 1 pp): the session builds
#: record the figures without gating; the gate has its own tests.
NO_GATE = GateConfig(max_accuracy_drop_pp=100.0, min_label_agreement=0.0)


@pytest.fixture(scope="session")
def line_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 frames per class (ok, scratch, dent, missing_hole), seed 11."""
    out = tmp_path_factory.mktemp("data") / "line"
    generate_dataset(out, per_class=100, seed=11)
    return out


@pytest.fixture(scope="session")
def dark_calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibration set from a nearly black line: the wrong images to calibrate int8 on."""
    out = tmp_path_factory.mktemp("data") / "dark"
    generate_dataset(out, per_class=5, seed=2, lighting=Lighting(brightness=-200.0), classes=("ok", "dent"))
    return out


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory, line_ds: Path, key_dir: Path) -> dict[str, BuildResult]:
    """A real signed bundle per estimator (static int8 where it applies). Read-only: copy to modify."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        est: build_bundle(
            line_ds,
            root / est,
            estimator=est,
            name=f"line-{est}",
            key_dir=key_dir,
            quantization="static",
            gate=NO_GATE,
            seed=3,
        )
        for est in ("mlp", "logreg", "forest")
    }
