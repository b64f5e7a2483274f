"""ONNX Runtime inference for one bundle, and the self-test that proves the device computes what the
cloud computed. onnxruntime errors are mapped to :class:`ModelLoadError` here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_agent.errors import ModelLoadError, SelfTestError
from edge_agent.onnx_guard import check_no_external_data
from edge_agent.preprocessing import Preprocessor, decode_png_b64
from edgeline.core.protocol.manifest import Manifest

log = logging.getLogger(__name__)


def make_session(model: Path | bytes, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Spinning threads double the CPU per call for no latency gain at batch 1.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    check_no_external_data(model)  # before ONNX Runtime opens it, whatever its version (onnx_guard.py)
    try:
        src = model if isinstance(model, bytes) else str(model)
        return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise ModelLoadError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0][:300]}") from exc


@dataclass(frozen=True, slots=True)
class Outputs:
    """What the model says about a batch: class probabilities and, for models with a good-part
    (anomaly) part, its score, map and global score. Maps stay on the device."""

    probabilities: np.ndarray  # (N, n_labels)
    anomaly_score: np.ndarray | None = None  # (N,)
    anomaly_map: np.ndarray | None = None  # (N, h, w)
    anomaly_global: np.ndarray | None = None  # (N,)


@dataclass
class LoadedModel:
    """A model ready to serve: session, preprocessing and manifest. Immutable once built, so the
    agent can swap one for another between two frames with a single reference assignment."""

    manifest: Manifest
    session: ort.InferenceSession
    preprocessor: Preprocessor
    input_name: str
    output_name: str
    output_names: tuple[str, ...] = ()

    @classmethod
    def load(cls, manifest: Manifest, model_path: Path, threads: int = 1) -> LoadedModel:
        session = make_session(model_path, threads)
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"model has {len(inputs)} inputs; edgeline models take exactly one")
        input_name = inputs[0].name
        if input_name != manifest.input.name:
            raise ModelLoadError(f"model input is {input_name!r} but the manifest declares {manifest.input.name!r}")
        outputs = [o.name for o in session.get_outputs()]
        if manifest.output_probabilities not in outputs:
            raise ModelLoadError(
                f"model has no output {manifest.output_probabilities!r} (outputs: {', '.join(outputs)})"
            )
        names = [manifest.output_probabilities]
        if manifest.anomaly is not None:
            a = manifest.anomaly
            for name in (a.score_output, a.map_output, a.global_output):
                if name not in outputs:
                    raise ModelLoadError(f"model has no anomaly output {name!r} (outputs: {', '.join(outputs)})")
            names += [a.score_output, a.map_output, a.global_output]
        pre = Preprocessor(manifest.preprocessing)
        if pre.output_shape != tuple(manifest.input.shape):
            raise ModelLoadError(
                f"preprocessing yields shape {pre.output_shape}, manifest input is {tuple(manifest.input.shape)}"
            )
        return cls(manifest, session, pre, input_name, manifest.output_probabilities, tuple(names))

    def run(self, x: np.ndarray) -> Outputs:
        """Every output the manifest declares, for a batch of preprocessed inputs."""
        raw = self._session_run(list(self.output_names or (self.output_name,)), x)
        probs = self._check_probs(np.asarray(raw[0], dtype=np.float32))
        if len(raw) == 1:
            return Outputs(probs)
        n = probs.shape[0]
        score = np.asarray(raw[1], dtype=np.float32).reshape(n)
        amap = np.asarray(raw[2], dtype=np.float32)
        glob = np.asarray(raw[3], dtype=np.float32).reshape(n)
        assert self.manifest.anomaly is not None
        if amap.shape != (n, *self.manifest.anomaly.map_shape):
            raise ModelLoadError(f"model returned an anomaly map of shape {amap.shape}, expected (N, *map_shape)")
        return Outputs(probs, score, amap, glob)

    def _session_run(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        try:
            return list(self.session.run(names, {self.input_name: x.astype(np.float32, copy=False)}))
        except Exception as exc:
            raise ModelLoadError(f"inference failed: {str(exc).splitlines()[0][:300]}") from exc

    def _check_probs(self, probs: np.ndarray) -> np.ndarray:
        if probs.ndim != 2 or probs.shape[1] != len(self.manifest.labels):
            raise ModelLoadError(f"model returned shape {probs.shape}, expected (N, {len(self.manifest.labels)})")
        return probs

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of preprocessed inputs, shape (N, n_labels)."""
        return self._check_probs(np.asarray(self._session_run([self.output_name], x)[0], dtype=np.float32))

    def predict_frame(self, frame: np.ndarray) -> np.ndarray:
        """Probabilities for one raw camera frame."""
        return self.predict_features(self.preprocessor(frame)[None, ...])[0]

    def self_test(self) -> float:
        """Run the manifest's self-test vectors. Returns the largest deviation; raises
        :class:`SelfTestError` when any output is off by more than the tolerance or not finite."""
        worst = 0.0
        st = self.manifest.selftest
        for i, case in enumerate(st.cases):
            try:
                out = self.run(self.preprocessor(decode_png_b64(case.image_png_b64))[None, ...])
            except Exception as exc:
                raise SelfTestError(f"self-test case {i} could not run: {exc}") from exc
            probs = out.probabilities[0]
            if not np.all(np.isfinite(probs)):
                raise SelfTestError(f"self-test case {i}: model produced NaN or infinity", reason="nan")
            diff = float(np.max(np.abs(probs - np.asarray(case.expected, dtype=np.float32))))
            worst = max(worst, diff)
            if diff > st.atol:
                raise SelfTestError(
                    f"self-test case {i} ({case.label}): output differs by {diff:.5f}, tolerance {st.atol}"
                )
            if out.anomaly_score is not None and case.anomaly_score is not None:
                got = float(out.anomaly_score[0])
                if not np.isfinite(got) or abs(got - case.anomaly_score) > st.score_atol:
                    raise SelfTestError(
                        f"self-test case {i} ({case.label}): anomaly score {got:.4f}, expected "
                        f"{case.anomaly_score:.4f} (tolerance {st.score_atol})"
                    )
        log.debug("self-test passed for %s v%d, worst deviation %.2e", self.manifest.name, self.manifest.version, worst)
        return worst
