"""The comparison in the telemetry windows: a real agent with a challenger in its own process, the
real telemetry plugin and outbox. Each window carries the champion x challenger agreement matrix,
the class pairs of disagreement, the challenger's histograms and latency percentiles, frames
compared and skipped; nothing per frame, whatever the frame count; hostile blocks are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.keys import SigningKey
from edge_agent.outbox.store import Outbox
from edge_agent.runtime import Agent, AgentState
from edge_agent.shadow.window import OTHER, ShadowCounts
from edge_agent.sources import MemoryCapture
from edge_agent.telemetry.drift import Calibrator
from edge_agent.telemetry.plugin import TelemetryPlugin
from edge_agent.telemetry.privacy import LaplaceNoise
from edge_agent.telemetry.windows import ModelKey
from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.shadow_window import MAX_PAIRS, VERDICTS, ShadowWindow
from edgeline.core.protocol.telemetry import ANOMALY_BINS, CONF_BINS, TelemetryWindow, parse_window
from edgeline.core.protocol.topics import Topics
from firmware_configs.telemetry_section import TelemetrySection
from tests.agent.helpers import make_config, wait_for
from tests.factories import tiny_frames, tiny_model, write_tiny_bundle
from tests.telemetry.conftest import SECRET
from tests.telemetry.test_privacy_wire import float_runs, longest_list

SHADOW_FIELDS = set(ShadowWindow.model_fields)


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> Path:
    return write_tiny_bundle(
        tmp_path_factory.mktemp("flip") / "tiny-v2", signing_key, version=2, model=tiny_model(flip=True)
    )


def _run(tmp_path: Path, champion: Path, challenger: Path, trust: Path, n: int) -> tuple[list[bytes], dict[str, Any]]:
    frames, _ = tiny_frames(40, seed=8)
    cfg = make_config(
        tmp_path,
        {"kind": "folder", "path": str(tmp_path), "loop": False},
        model={"bundle": str(champion), "trust_file": str(trust)},
        shadow={
            "enabled": True,
            "bundle": str(challenger),
            "max_fps": 1000,
            "max_duty": 1.0,
            "yield_when_behind": False,
            "idle_class": False,
        },
    )
    ob = Outbox(tmp_path / "outbox.db")
    plugin = TelemetryPlugin(
        TelemetrySection(window_frames=50, window_s=3600, min_frames=20, tick_s=0.05),
        outbox=ob,
        secret=SECRET,
        topics=Topics(),
        link=None,
    )
    agent = Agent(cfg, plugins=[plugin], capture=MemoryCapture((frames * (n // 40 + 1))[:n], "belt"))
    agent.start()
    assert wait_for(lambda: agent.state in (AgentState.STOPPED, AgentState.FAILED), 60.0)
    agent.wait(10.0)
    stats = agent.counters()["shadow"]
    return [m.payload for m in ob.peek(100)], stats


def test_windows_carry_the_comparison_as_aggregates_only(
    tmp_path: Path, tiny_bundle: Path, flipped: Path, key_dir: Path
) -> None:
    payloads, stats = _run(tmp_path, tiny_bundle, flipped, key_dir / "trust.json", 400)
    windows = [parse_window(p) for p in payloads]
    assert len(windows) == 8 and sum(w.frames for w in windows) == 400
    blocks = [w.shadow for w in windows if w.shadow is not None]
    assert blocks and all(b.challenger.version == 2 for b in blocks)
    compared = sum(b.compared for b in blocks)
    # what the challenger counted reached the windows (one frame may still be in its hands at the stop)
    assert stats["compared"] - 1 <= compared <= stats["compared"] and compared > 0
    offered = sum(b.compared + b.skipped + b.errors for b in blocks)
    assert stats["offered"] - 1 <= offered <= stats["offered"]
    for b in blocks:
        assert sum(b.agreement[a][c] for a in VERDICTS for c in VERDICTS) == b.compared
        assert sum(b.confidence) == b.compared and len(b.confidence) == CONF_BINS
        assert sum(n for row in b.disagreement.values() for n in row.values()) <= b.compared
    # the flipped challenger says defect where the champion says ok and the other way round
    flips = sum(b.agreement["ok"]["defect"] + b.agreement["defect"]["ok"] for b in blocks)
    assert flips >= 0.8 * compared
    pairs = {(a, c) for b in blocks for a, row in b.disagreement.items() for c in row}
    assert pairs and all(a != c for a, c in pairs)
    assert all(b.latency_ms is not None and b.latency_ms.p99 >= b.latency_ms.p50 > 0 for b in blocks if b.compared)
    for p in payloads:
        body = json.loads(p)
        if "shadow" in body:
            assert set(body["shadow"]) <= SHADOW_FIELDS
            assert float_runs(body["shadow"]) <= 2 and longest_list(body["shadow"]) <= 20


def test_the_block_does_not_grow_with_the_frames_it_counts() -> None:
    key = ModelKey("tiny", 2, "a" * 64)
    small, large = ShadowCounts(challenger=key), ShadowCounts(challenger=key)
    rng = np.random.default_rng(3)
    for counts, n in ((small, 10), (large, 50_000)):
        for _ in range(n):
            counts.add(
                ("ok", "ok"), ("defect", "scratch"), float(rng.random()), float(rng.normal()), float(rng.random())
            )
    a, b = small.to_wire(Calibrator()), large.to_wire(Calibrator())
    assert a is not None and b is not None
    size = [len(json.dumps(x.model_dump(mode="json"))) for x in (a, b)]
    assert size[1] < 1.2 * size[0]  # 5,000 times the frames: only the digits of the counts grow

    def shape(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: shape(x) for k, x in v.items()}
        return len(v) if isinstance(v, list) else None

    assert shape(a.model_dump(mode="json")) == shape(b.model_dump(mode="json"))
    assert b.compared == 50_000 and b.disagreement == {"ok": {"scratch": 50_000}}


def test_class_pairs_are_bounded() -> None:
    counts = ShadowCounts(challenger=ModelKey("tiny", 2, "a" * 64))
    for i in range(300):
        counts.add(("ok", f"a{i}"), ("ok", f"b{i}"), 0.5, None, 1.0)
    w = counts.to_wire(Calibrator())
    assert w is not None
    assert sum(len(r) for r in w.disagreement.values()) == MAX_PAIRS
    assert w.disagreement[OTHER][OTHER] == 300 - (MAX_PAIRS - 1)


def test_counts_persist_merge_and_take_the_noise() -> None:
    key = ModelKey("tiny", 2, "a" * 64)
    one = ShadowCounts(challenger=key, skipped=3)
    one.add(("ok", "ok"), ("defect", "scratch"), 0.9, 2.0, 1.5)
    two = ShadowCounts.from_state(json.loads(json.dumps(one.to_state())))
    assert two.to_wire(Calibrator()) == one.to_wire(Calibrator())
    both = one.merge(two)
    assert both.compared == 2 and both.skipped == 6 and both.agreement[0, 1] == 2
    other = ShadowCounts(challenger=ModelKey("tiny", 3, "b" * 64))
    assert one.merge(other) is other  # another challenger's counts never add to these
    noise = LaplaceNoise(1.0, rng=np.random.default_rng(1))
    noised = both.noised(noise.signed, noise.scale)
    assert noised.agreement.shape == (3, 3) and noised.agreement.min() < 0  # signed: 7 of 9 cells are 0
    wire = noised.to_wire(Calibrator())
    assert wire is not None and wire.noise_scale == noise.scale and both.noise_scale is None


def window_with(shadow: dict[str, Any]) -> dict[str, Any]:
    """A window on the wire (a dict) carrying the shadow block ``shadow``."""
    return {
        "schema": "edgeline.telemetry/1",
        "key": "0" * 32,
        "device": "1" * 32,
        "model": {"name": "tiny", "version": 1, "sha256": "c" * 64},
        "start": 1e9,
        "end": 1e9 + 60,
        "frames": 40,
        "class_counts": {"ok": 40},
        "confidence": [0] * 9 + [40],
        "input_stats": {},
        "shadow": shadow,
    }


def _block(**over: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "challenger": {"name": "tiny", "version": 2, "sha256": "a" * 64},
        "compared": 40,
        "agreement": {a: {b: (40 if a == b == "ok" else 0) for b in VERDICTS} for a in VERDICTS},
        "confidence": [0] * 9 + [40],
    }
    block.update(over)
    return block


def test_a_good_block_parses_and_a_window_without_one_reads_as_before() -> None:
    w = parse_window(window_with(_block(anomaly_score=[0] * ANOMALY_BINS)))
    assert w.shadow is not None and w.shadow.agreed == 40
    plain = window_with(_block())
    del plain["shadow"]
    assert "shadow" not in TelemetryWindow.model_validate(plain).to_body()


@pytest.mark.parametrize(
    ("block", "field"),
    [
        (_block(scores=[0.1] * 40), "shadow.scores"),  # a value per frame has no field to go in
        (_block(confidence=[1] * 40), "shadow.confidence"),
        (_block(anomaly_score=[0.5] * 20), "shadow.anomaly_score"),
        (_block(agreement={"ok": {"ok": 40}}), "shadow.agreement"),
        (_block(disagreement={f"a{i}": {f"b{j}": 1 for j in range(9)} for i in range(8)}), "shadow.disagreement"),
        (_block(disagreement={"ok": {"../x": 1}}), "shadow.disagreement"),
        (_block(compared=-1), "shadow.compared"),
        (_block(compared=10**12), "shadow.compared"),
        (_block(drift={"brightness": {"psi": 0.1, "threshold": 0.2, "drifted": False}}), "shadow.drift"),
        (_block(latency_ms={"p50": 1.0, "p99": 2.0, "values": [1.0, 2.0]}), "shadow.latency_ms.values"),
    ],
)
def test_hostile_blocks_are_refused_naming_the_field(block: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError, match=field.replace(".", r"\.")):
        parse_window(window_with(block))
