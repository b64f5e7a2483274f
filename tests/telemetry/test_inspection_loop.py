"""The loop with an inspection bundle (good-part model + classifier): the anomaly-score histogram
joins the telemetry windows and the drift reference, and retraining from drift evidence re-fits the
good-part model. Real build, real model on real frames, the real telemetry plugin, ingest and store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_registry.telemetry.ingest import Ingestor
from cloud_registry.telemetry.retrain import RetrainPolicy, plan_retrain, retrain
from cloud_registry.telemetry.store import TelemetryStore
from converters.inspection_build import InspectionResult, build_inspection
from converters.keys import KeyPaths
from converters.line_gate import LineTargets
from converters.synth import render_ood
from edge_agent.bundle import open_bundle
from edge_agent.inference import inspect_frame
from edge_agent.model import LoadedModel
from edge_agent.outbox.store import Outbox
from edge_agent.telemetry.plugin import TelemetryPlugin
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.telemetry import ANOMALY_BINS, parse_window
from edgeline.core.protocol.topics import Topics
from firmware_configs.telemetry_section import TelemetrySection
from tests.telemetry.conftest import SECRET, AgentStub, Line, SimClock, line_frames


@pytest.fixture(scope="module")
def insp_v1(line: Line, tmp_path_factory: pytest.TempPathFactory) -> InspectionResult:
    out = tmp_path_factory.mktemp("insp") / "v1"
    return build_inspection(
        line.data,
        out,
        name="plates-insp",
        key_dir=line.key_dir,
        targets=LineTargets(max_false_reject=0.05, max_escape=0.2),
        force_unverified=True,
    )


@pytest.fixture(scope="module")
def insp_model(insp_v1: InspectionResult) -> LoadedModel:
    m = insp_v1.manifest
    return LoadedModel.load(m, insp_v1.bundle_dir / m.artifact.filename)


def windows_of(model: LoadedModel, tmp: Path, phases: list[list[np.ndarray]]) -> Outbox:
    clock = SimClock()
    ob = Outbox(tmp / "outbox.db", clock=clock)
    cfg = TelemetrySection(window_frames=40, window_s=3600, min_frames=20)
    plugin = TelemetryPlugin(cfg, outbox=ob, secret=SECRET, topics=Topics(), link=None, clock=clock, background=False)
    plugin.start(AgentStub(device_id="cam-9", current_model=model))
    for images in phases:
        for i, img in enumerate(images):
            plugin.on_result(inspect_frame(model, img, i, with_stats=True))
            clock.advance(30)
        plugin.tick()
    return ob


def test_windows_carry_the_anomaly_histogram_and_its_drift(insp_model: LoadedModel, tmp_path: Path) -> None:
    assert insp_model.manifest.reference.anomaly_score is not None
    normal, _ = line_frames(80, seed=41)
    rng = np.random.default_rng(5)
    foreign = [render_ood("cat" if i % 2 else "cup", rng) for i in range(40)]
    ob = windows_of(insp_model, tmp_path, [normal[:40], normal[40:], foreign])
    wins = [parse_window(m.payload) for m in ob.peek(10)]
    assert len(wins) == 3
    for w in wins:
        assert w.anomaly_score is not None and len(w.anomaly_score) == ANOMALY_BINS
        assert sum(w.anomaly_score) == w.frames  # every frame of an anomaly model has a score
        assert "anomaly_score" in w.drift
    assert not wins[0].drift["anomaly_score"].drifted and not wins[1].drift["anomaly_score"].drifted
    # a line of cats and cups is not the line it knew: the class mix (all unknown) drifts, and every
    # anomaly score sits above the calibration centre (logit > 0), where normal windows hold the good parts
    assert wins[2].drift["class_mix"].drifted
    upper = ANOMALY_BINS // 2
    assert sum(wins[2].anomaly_score[upper:]) >= 0.95 * wins[2].frames  # type: ignore[index]
    assert all(sum(w.anomaly_score[:upper]) >= 0.15 * w.frames for w in wins[:2])  # type: ignore[index]
    assert wins[2].class_counts.get("unknown", 0) >= 36


def test_a_classifier_bundle_sends_no_anomaly_histogram(line_v1: LoadedModel, tmp_path: Path) -> None:
    normal, _ = line_frames(40, seed=42)
    [w] = [parse_window(m.payload) for m in windows_of(line_v1, tmp_path, [normal]).peek(10)]
    assert w.anomaly_score is None and "anomaly_score" not in w.drift


def test_retraining_an_inspection_model_refits_its_good_part_model(
    line: Line, insp_v1: InspectionResult, insp_model: LoadedModel, tmp_path: Path
) -> None:
    normal, _ = line_frames(160, seed=43)
    dark, _ = line_frames(320, seed=44, dark=True)
    ob = windows_of(
        insp_model,
        tmp_path,
        [normal[i : i + 40] for i in range(0, 160, 40)] + [dark[i : i + 40] for i in range(0, 320, 40)],
    )
    store = TelemetryStore(tmp_path / "telemetry.db")
    ingest = Ingestor(store, Topics())
    assert [ingest.handle(m.topic, m.payload) for m in ob.peek(100)] == ["stored"] * 12
    manifest = insp_v1.manifest
    policy = RetrainPolicy(min_gain_pp=-100.0, max_normal_drop_pp=100.0)  # judged below, not by the gate
    plan = plan_retrain(store, "plates-insp", reference_for=lambda name, v: manifest.reference, policy=policy)
    data = (insp_v1.bundle_dir / manifest.artifact.filename).read_bytes()
    res = retrain(plan, line.data, tmp_path / "v2", key_dir=line.key_dir, parent=(manifest, data), policy=policy)
    store.close()
    m2 = open_bundle(tmp_path / "v2", TrustStore.load(KeyPaths(line.key_dir).trust)).manifest
    assert m2.version == 2 and m2.anomaly is not None and m2.operating_point is not None
    assert m2.lineage["training"]["kind"] == "hybrid"
    assert "lighting_augment" in m2.lineage["training"]["augment"]
    assert m2.lineage["dataset"]["files"] < insp_v1.manifest.lineage["dataset"]["files"]  # held-out kept apart
    acc = res.accuracy
    assert acc["new_drifted"] >= 0.9 and acc["parent_drifted"] >= 0.9, acc
