"""Trained bundles: parity for every estimator, honest quantization, what the manifest carries, and
that the device side accepts them (and rejects a flipped byte)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from converters.dataset import dataset_sha256, scan_image_folder
from converters.pipeline import BuildResult, build_bundle
from converters.quantize import count_quantized
from converters.synth import Lighting, lighting_augment, render_batch
from edge_agent.bundle import open_bundle, verify_bundle
from edge_agent.errors import EdgelineError
from edge_agent.model import LoadedModel
from edge_agent.preprocessing import STAT_RANGES
from edgeline.cli.main import cli
from edgeline.core.protocol.signing import TrustStore
from tests.converters.conftest import NO_GATE

ESTIMATORS = ("mlp", "logreg", "forest")


@pytest.mark.parametrize("est", ESTIMATORS)
def test_onnx_reproduces_scikit_learn_on_held_out_rows(builds: dict[str, BuildResult], est: str) -> None:
    conv = builds[est].conversion
    assert conv.rows == 100
    assert conv.label_agreement == 1.0
    assert conv.max_prob_diff < 1e-4
    assert builds[est].metrics["accuracy_sklearn"] == builds[est].metrics["accuracy_float"]


@pytest.mark.parametrize("est", ["mlp", "logreg"])
def test_linear_models_are_really_int8(builds: dict[str, BuildResult], est: str) -> None:
    r = builds[est]
    graph = onnx.load(str(r.model_path))
    quantized, int8_bytes = count_quantized(graph)
    assert r.manifest.quantization.mode == "static_qdq"
    assert quantized == r.quantization.quantized == r.quantization.eligible
    assert r.manifest.quantization.quantized_ops == tuple(f"{k}:{v}" for k, v in sorted(quantized.items()))
    assert int8_bytes > 0
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)  # no ai.onnx.ml operator left
    assert [o.name for o in graph.graph.output] == ["probabilities"]
    assert r.quantization.model_bytes == r.model_path.stat().st_size
    # the figures the gate saw are the figures of the shipped model
    assert r.metrics["accuracy"] == pytest.approx(r.gate.figures.quant_accuracy, abs=1e-6)


def test_int8_mlp_is_under_30_percent_of_float(builds: dict[str, BuildResult]) -> None:
    q = builds["mlp"].quantization
    assert q.model_bytes <= 0.30 * q.float_bytes


def test_forest_ships_float_and_says_so(builds: dict[str, BuildResult]) -> None:
    r = builds["forest"]
    graph = onnx.load(str(r.model_path))
    assert r.manifest.quantization.mode == "float"
    assert "TreeEnsemble" in r.manifest.quantization.note and r.manifest.quantization.quantized_ops == ()
    assert count_quantized(graph) == ({}, 0)
    assert any(n.op_type.startswith("TreeEnsemble") for n in graph.graph.node)
    assert r.gate.figures.label_agreement == 1.0


def test_opsets_are_pinned_and_unique(builds: dict[str, BuildResult]) -> None:
    for r in builds.values():
        domains = [o.domain for o in onnx.load(str(r.model_path)).opset_import]
        assert len(domains) == len(set(domains))
    forest = {o.domain: o.version for o in onnx.load(str(builds["forest"].model_path)).opset_import}
    # the default domain is pinned; skl2onnx records the lowest ai.onnx.ml version the graph needs (<= 3)
    assert forest[""] == 17 and 1 <= forest["ai.onnx.ml"] <= 3


def test_manifest_carries_reference_selftest_metrics_and_lineage(builds: dict[str, BuildResult], line_ds: Path) -> None:
    m = builds["mlp"].manifest
    assert m.labels == ("dent", "missing_hole", "ok", "scratch")
    assert m.input.name == "input" and m.output_probabilities == "probabilities"
    assert set(m.reference.input_stats) == set(STAT_RANGES)
    for hist in m.reference.input_stats.values():
        assert sum(hist.freqs) == pytest.approx(1.0, abs=1e-4)
    assert m.reference.confidence is not None and sum(m.reference.confidence.freqs) == pytest.approx(1.0, abs=1e-4)
    assert sum(m.reference.class_mix.values()) == pytest.approx(1.0, abs=1e-4)
    assert [c.label for c in m.selftest.cases] == list(m.labels)
    assert m.selftest.atol == 1e-2  # int8 kernels differ a little between CPU families
    assert {"accuracy", "accuracy_float", "label_agreement", "precision.dent", "recall.scratch"} <= set(m.metrics)
    lin = m.lineage
    assert lin["dataset"]["sha256"] == dataset_sha256(scan_image_folder(line_ds))
    assert lin["dataset"]["counts"] == {"dent": 100, "missing_hole": 100, "ok": 100, "scratch": 100}
    assert lin["training"]["estimator"] == "mlp" and lin["training"]["params"]["pca__n_components"] == 64
    assert "git_commit" in lin and lin["code_version"] and "onnxruntime" in lin["libraries"]


def test_report_is_written_as_json_and_png(builds: dict[str, BuildResult]) -> None:
    r = builds["logreg"]
    doc = json.loads(r.report_json.read_text())
    assert doc["evaluation"]["confusion"] and len(doc["evaluation"]["confusion"]) == 4
    assert doc["quantization"]["mode"] == "static_qdq" and doc["gate"]["passed"] is True
    png = cv2.imread(str(r.report_png))
    assert png is not None and png.shape[0] > 200


@pytest.mark.parametrize("est", ESTIMATORS)
def test_device_side_verifies_and_reproduces_accuracy(
    builds: dict[str, BuildResult], trust: TrustStore, est: str
) -> None:
    r = builds[est]
    summary = verify_bundle(r.bundle_dir, trust)
    assert summary["quantization"] == r.manifest.quantization.mode
    # the agent's code path (raw frame -> shared preprocessing -> ORT) on fresh frames of the same line
    model = LoadedModel.load(r.manifest, r.model_path)
    frames, labels = render_batch(10, seed=77)
    pred = [r.manifest.labels[int(np.argmax(model.predict_frame(f)))] for f in frames]
    assert np.mean([p == t for p, t in zip(pred, labels, strict=True)]) >= 0.75


def test_verify_rejects_one_flipped_byte_in_trained_model_and_manifest(
    builds: dict[str, BuildResult], key_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    trust = str(key_dir / "trust.json")
    ok = runner.invoke(cli, ["verify", str(builds["mlp"].bundle_dir), "--trust", trust])
    assert ok.exit_code == 0, ok.output
    model_copy = shutil.copytree(builds["mlp"].bundle_dir, tmp_path / "m")
    data = bytearray((model_copy / "model.onnx").read_bytes())
    data[len(data) // 3] ^= 0x10
    (model_copy / "model.onnx").write_bytes(bytes(data))
    res = runner.invoke(cli, ["verify", str(model_copy), "--trust", trust])
    assert res.exit_code == 1 and "sha256" in res.output
    man_copy = shutil.copytree(builds["mlp"].bundle_dir, tmp_path / "f")
    raw = bytearray((man_copy / "manifest.json").read_bytes())
    pos = raw.index(b'"accuracy"') + 3  # inside a signed key of the body
    raw[pos] ^= 0x01
    (man_copy / "manifest.json").write_bytes(bytes(raw))
    res = runner.invoke(cli, ["verify", str(man_copy), "--trust", trust])
    assert res.exit_code == 1 and "REJECTED" in res.output
    with pytest.raises(EdgelineError, match=r"signature|manifest field"):
        open_bundle(man_copy, TrustStore.load(key_dir / "trust.json"))


def test_lighting_augmentation_helps_on_a_darker_line(line_ds: Path, key_dir: Path, tmp_path: Path) -> None:
    """The retraining use: augmenting training images with darker lighting makes the model hold up
    on a darker line. Same data and seed; only the augmentation differs."""
    dark_frames, dark_labels = render_batch(25, seed=123, lighting=Lighting(brightness=-60, contrast=0.7))
    accs = {}
    for tag, aug in (("plain", None), ("augmented", lighting_augment((-70.0, 0.0), (0.6, 1.0)))):
        r = build_bundle(
            line_ds,
            tmp_path / tag,
            estimator="logreg",
            key_dir=key_dir,
            quantization="float",
            gate=NO_GATE,
            augment=aug,
            seed=3,
        )
        model = LoadedModel.load(r.manifest, r.model_path)
        pred = [r.manifest.labels[int(np.argmax(model.predict_frame(f)))] for f in dark_frames]
        accs[tag] = float(np.mean([p == t for p, t in zip(pred, dark_labels, strict=True)]))
        if aug is not None:
            assert r.manifest.lineage["training"]["augmented_rows"] == 300
            assert r.metrics["train_rows"] == 600 and r.metrics["test_rows"] == 100  # held-out rows never augmented
    assert accs["augmented"] >= accs["plain"] + 0.1, accs
