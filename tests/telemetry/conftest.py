"""Fixtures of the telemetry tests: a simulated clock, frame results from a real model on real
frames, a minimal agent handle for driving the plugin on its own, and a real signed bundle whose
manifest carries reference histograms measured on its training frames."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import SigningKey
from edge_agent.inference import inspect_frame
from edge_agent.model import LoadedModel
from edge_agent.plugins import FrameResult
from edge_agent.preprocessing import Preprocessor, input_stats
from edge_agent.telemetry.drift import reference_input_stats
from edge_agent.verdict import Verdict
from edgeline.core.protocol.manifest import Reference
from edgeline.core.protocol.signing import TrustStore
from tests.factories import LABELS, SPEC, tiny_frame, tiny_model, write_tiny_bundle

SECRET = b"fleet-secret-for-tests-0123456789"
SHA_A = "a" * 64


@dataclass
class SimClock:
    t: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class AgentStub:
    """The part of the agent a plugin sees (AgentHandle), for tests of the plugin on its own. The
    end-to-end privacy test runs the real :class:`edge_agent.runtime.Agent`."""

    device_id: str = "line-7-cam-2"
    current_model: LoadedModel | None = None
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    errors: int = 0
    dropped: int = 0

    def activate(self, model: LoadedModel) -> None:
        self.current_model = model

    def deactivate(self) -> None:
        self.current_model = None

    def local_event(self, kind: str, payload: dict[str, object]) -> None:
        self.events.append((kind, payload))

    def counters(self) -> dict[str, Any]:
        return {"errors": {"PreprocessError": self.errors}, "dropped": {"queue_full": self.dropped}}


def result(
    label: str = "ok",
    confidence: float = 0.9,
    *,
    sha: str = SHA_A,
    stats: dict[str, float] | None = None,
    latency_ms: float = 2.0,
    model: str = "tiny",
    version: int = 1,
) -> FrameResult:
    v = Verdict(0, "ok" if label == "ok" else "defect", label, confidence, False, model, version, latency_ms, 0.0)
    probs = np.array([confidence, 1 - confidence], dtype=np.float32)
    return FrameResult(verdict=v, probabilities=probs, input_stats=stats, model_sha256=sha)


def darken(frame: np.ndarray, offset: int) -> np.ndarray:
    return np.clip(frame.astype(np.int16) - offset, 0, 255).astype(np.uint8)


def frames(n: int, seed: int, dark: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = [tiny_frame(LABELS[i % 2], rng) for i in range(n)]
    return [darken(f, dark) for f in out] if dark else out


@pytest.fixture(scope="session")
def ref_bundle(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> Path:
    """A real signed bundle (tiny logistic regression) whose manifest has reference histograms of
    the input statistics, confidence and class mix, measured on 400 frames like its training set."""
    from edge_agent.model import make_session
    from edge_agent.telemetry.drift import reference_histogram
    from edge_agent.telemetry.windows import CONF_EDGES
    from edgeline.core.protocol.manifest import Histogram

    tm = tiny_model(0)
    sess = make_session(tm.onnx_bytes)
    out_name = [o.name for o in sess.get_outputs()][-1]
    pre = Preprocessor(SPEC)
    ref_frames = frames(400, seed=1234)
    probs = sess.run([out_name], {"input": pre.batch(ref_frames)})[0]
    stats = [input_stats(pre.prepare(f)) for f in ref_frames]
    conf: Histogram = reference_histogram(np.max(probs, axis=1), CONF_EDGES)
    top = np.argmax(probs, axis=1)
    mix = {lab: float(np.mean(top == i)) for i, lab in enumerate(LABELS)}
    reference = Reference(input_stats=reference_input_stats(stats), confidence=conf, class_mix=mix)
    out = tmp_path_factory.mktemp("refbundle") / "tiny-v1"
    return write_tiny_bundle(out, signing_key, model=tm, valid_days=365.0, reference=reference)


@pytest.fixture
def ref_model(ref_bundle: Path, trust: TrustStore) -> LoadedModel:
    from edge_agent.inference import load_and_check

    return load_and_check(ref_bundle, trust)


def run_frames(model: LoadedModel, images: list[np.ndarray], start_id: int = 0) -> Iterator[FrameResult]:
    """Real inference (preprocessing, ONNX Runtime, verdict, input statistics) on real frames."""
    for i, img in enumerate(images):
        yield inspect_frame(model, img, start_id + i, with_stats=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TelemetryStore]:
    s = TelemetryStore(tmp_path / "telemetry.db")
    yield s
    s.close()


# -- the synthetic line and its v1 model (converters pipeline), shared by drift and retraining tests ----
DARK = {"brightness": -40.0, "contrast": 0.85}


@dataclass(frozen=True)
class Line:
    data: Path
    v1: Path
    key_dir: Path


@pytest.fixture(scope="session")
def line(tmp_path_factory: pytest.TempPathFactory, key_dir: Path) -> Line:
    """400 labeled synthetic line images (4 classes) and a v1 bundle trained on them by the build
    pipeline (MLP, int8, gate, reference histograms), signed with the session's keys."""
    from converters.pipeline import build_bundle
    from converters.synth import generate_dataset

    root = tmp_path_factory.mktemp("line")
    generate_dataset(root / "data", per_class=100, seed=1)
    build_bundle(root / "data", root / "v1", name="plates", version=1, key_dir=key_dir)
    return Line(root / "data", root / "v1", key_dir)


@pytest.fixture
def line_v1(line: Line, trust: TrustStore) -> LoadedModel:
    from edge_agent.inference import load_and_check

    return load_and_check(line.v1, trust)


def line_frames(n: int, seed: int, dark: bool = False) -> tuple[list[np.ndarray], list[str]]:
    from converters.synth import CLASSES, Conditions, Lighting, render_part

    rng = np.random.default_rng(seed)
    cond = Conditions(lighting=Lighting(**DARK) if dark else Lighting())
    labels = [CLASSES[int(rng.integers(len(CLASSES)))] for _ in range(n)]
    return [render_part(lab, rng, conditions=cond) for lab in labels], labels
