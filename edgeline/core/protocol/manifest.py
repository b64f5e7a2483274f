"""The deployment manifest: everything a device needs to accept, verify, run and monitor a model.

A manifest is the ``body`` of a signed :class:`~edgeline.core.protocol.signing.Envelope`. It is strict:
unknown fields are rejected, so a field that one side adds and the other ignores cannot slip through.

Two counters protect against replay and downgrade:

* ``version``: the model version, which only goes up for a model name;
* ``sequence``: the deployment serial issued by the registry for every desired-state message. A device
  refuses a sequence it has already seen or passed (replay). A rollback to an older model version is a
  *new* deployment with a higher sequence and ``allow_downgrade`` set, signed like any other.

The preprocessing spec (``preprocessing``) is :mod:`.preprocess_spec`'s; its names are importable from here too.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from edgeline.core.errors import ManifestError
from edgeline.core.protocol.preprocess_spec import SEARCH_ANGLES, AngleSearch, PreprocessSpec, Registration
from edgeline.core.strict import Strict, StrictByName

SCHEMA = "edgeline.manifest/1"
#: Hard ceiling on an artifact a device will ever accept, whatever the manifest says.
MAX_ARTIFACT_BYTES = 256 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 128 * 1024


class InputSpec(Strict):
    name: str
    shape: tuple[int, ...]  # without the batch dimension
    dtype: Literal["float32"] = "float32"


class Artifact(Strict):
    #: one plain file name inside the slot directory: no path separator, no leading dot, not ``..``
    #: (a name from signed data is still joined onto a directory; see ``edge_agent.bundle.child_path``)
    filename: str = Field(default="model.onnx", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0, le=MAX_ARTIFACT_BYTES)
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1024, le=8 * 1024 * 1024)
    chunk_sha256: tuple[str, ...] = ()

    @field_validator("filename")
    @classmethod
    def _not_the_manifest(cls, v: str) -> str:
        if v == "manifest.json":
            raise ValueError("the model file cannot be named like the bundle's manifest")
        return v

    @model_validator(mode="after")
    def _chunks(self) -> Artifact:
        if self.chunk_sha256:
            expected = -(-self.size // self.chunk_size)
            if len(self.chunk_sha256) != expected:
                raise ValueError(f"{len(self.chunk_sha256)} chunk hashes for {expected} chunks")
        return self

    @property
    def chunk_count(self) -> int:
        return -(-self.size // self.chunk_size)


class Histogram(Strict):
    """Bin edges (n+1) and normalised frequencies (n) of a reference distribution."""

    edges: tuple[float, ...]
    freqs: tuple[float, ...]

    @model_validator(mode="after")
    def _shape(self) -> Histogram:
        if len(self.edges) != len(self.freqs) + 1 or len(self.freqs) < 2:
            raise ValueError("a histogram needs n >= 2 frequencies and n+1 edges")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("histogram edges must increase")
        return self


class Reference(Strict):
    """Reference distributions measured on training data, for drift detection on the device."""

    input_stats: dict[str, Histogram] = {}
    confidence: Histogram | None = None
    class_mix: dict[str, float] = {}
    #: the training images' anomaly scores (out of fold), as calibrated logits ``(score - center) / scale``
    anomaly_score: Histogram | None = None


class SelfTestCase(Strict):
    image_png_b64: str  # a raw frame, PNG-encoded: the device runs the full preprocessing on it
    expected: tuple[float, ...]  # expected class probabilities
    label: str
    #: expected anomaly score (models with an anomaly part), compared with ``SelfTest.score_atol``
    anomaly_score: float | None = None


class SelfTest(Strict):
    cases: tuple[SelfTestCase, ...] = Field(min_length=1)
    atol: float = Field(default=1e-3, gt=0, le=0.5)
    score_atol: float = Field(default=0.02, gt=0, le=5.0)


class Thresholds(Strict):
    """Turn probabilities into a verdict: defect when the top class is not ``ok_label`` and its
    probability reaches ``defect_min_confidence``; otherwise ok (a low-confidence defect becomes ok
    with ``uncertain`` set, so the line can route it to a human)."""

    ok_label: str = "ok"
    defect_min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    per_class: dict[str, float] = {}


class Target(Strict):
    """Who may install this manifest. Empty lists mean 'any'; non-empty lists must all match."""

    devices: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    hardware_classes: tuple[str, ...] = ()

    def matches(self, device_id: str, groups: set[str] | frozenset[str], hardware_class: str) -> bool:
        if self.devices and device_id not in self.devices:
            return False
        if self.groups and not (set(self.groups) & set(groups)):
            return False
        return not (self.hardware_classes and hardware_class not in self.hardware_classes)


class Quantization(Strict):
    mode: Literal["static_qdq", "dynamic", "float"]
    quantized_ops: tuple[str, ...] = ()
    note: str = ""


class AnomalySpec(Strict):
    """The good-part (anomaly) model inside the ONNX graph, and how its outputs are read.

    ``score_output`` (N, 1): the largest smoothed z-score of the reconstruction residual over the
    part; ``map_output`` (N, h, w): that z-map on the pooled grid (stays on the device);
    ``global_output`` (N, 1): the share of map cells far from every good part, high for frames
    unlike any good part (a wrong part, an empty belt, a covered lens), low for a local defect. The
    graph's probabilities already include the anomaly as ``sigmoid((score - center) / scale)``;
    ``unknown_global`` is the global score above which a frame is ``unknown``."""

    score_output: str = "anomaly_score"
    map_output: str = "anomaly_map"
    global_output: str = "anomaly_global"
    map_shape: tuple[int, int]  # (height, width)
    center: float
    scale: float = Field(gt=0)
    unknown_global: float = Field(gt=0)
    method: str = "pca-residual"

    @field_validator("map_shape")
    @classmethod
    def _map(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1 or max(v) > 1024:
            raise ValueError("map_shape must be between 1 and 1024 cells a side")
        return v


class OperatingPoint(Strict):
    """The line's decision, chosen on held-out data for a named target.

    The defect score is ``1 - p(ok)`` from the graph's probabilities (which combine the classifier
    and the anomaly score as a noisy OR). ``threshold``: defect at or above it; ``review``: from
    here to the threshold the part passes but is flagged ``uncertain`` (a human looks)."""

    threshold: float = Field(ge=0.0, le=1.0)
    review: float = Field(ge=0.0, le=1.0)
    target: Literal["max_false_reject", "max_escape"] = "max_false_reject"
    target_value: float = Field(default=0.01, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _order(self) -> OperatingPoint:
        if self.review > self.threshold:
            raise ValueError("review must not be above threshold")
        return self


class Manifest(StrictByName):
    schema_: Literal["edgeline.manifest/1"] = Field(default="edgeline.manifest/1", alias="schema")
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    version: int = Field(ge=1)
    sequence: int = Field(default=0, ge=0)
    allow_downgrade: bool = False
    issued_at: float
    expires_at: float
    target: Target = Target()
    artifact: Artifact
    input: InputSpec
    output_probabilities: str = "probabilities"
    preprocessing: PreprocessSpec
    labels: tuple[str, ...] = Field(min_length=2)
    thresholds: Thresholds = Thresholds()
    reference: Reference = Reference()
    selftest: SelfTest
    quantization: Quantization
    metrics: dict[str, float] = {}
    lineage: dict[str, Any] = {}
    anomaly: AnomalySpec | None = None
    operating_point: OperatingPoint | None = None
    #: why the gate would have refused this bundle, when it was forced past it (empty: verified)
    unverified: tuple[str, ...] = ()
    #: ``serve``: a deployment for the serving slots; ``shadow``: a challenger to run beside the
    #: serving model, never acted on (only the shadow slot takes it; the serving slots refuse it)
    role: Literal["serve", "shadow"] = "serve"

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.thresholds.ok_label not in self.labels:
            raise ValueError(f"ok_label {self.thresholds.ok_label!r} is not one of the labels")
        for case in self.selftest.cases:
            if len(case.expected) != len(self.labels):
                raise ValueError("self-test expected outputs must have one value per label")
            if (case.anomaly_score is None) != (self.anomaly is None):
                raise ValueError("self-test cases carry an anomaly score exactly when the model has an anomaly part")
        if len({self.output_probabilities, *self._anomaly_outputs()}) != 1 + len(self._anomaly_outputs()):
            raise ValueError("output names must be distinct")
        return self

    def _anomaly_outputs(self) -> tuple[str, ...]:
        a = self.anomaly
        return () if a is None else (a.score_output, a.map_output, a.global_output)

    def to_body(self) -> dict[str, Any]:
        """The JSON body that is signed (aliases applied, tuples as lists). ``role`` only when it is
        not ``serve``: every serving manifest signs the same bytes as before the field."""
        body = self.model_dump(mode="json", by_alias=True)
        if body.get("role") == "serve":
            del body["role"]
        return body

    def is_expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


def parse_manifest(body: Any) -> Manifest:
    """Validate a manifest body; every failure becomes a :class:`ManifestError` naming the field."""
    try:
        return Manifest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "manifest"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ManifestError(f"manifest field {loc}: {first['msg']}{more}") from exc


def artifact_for(data: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE, filename: str = "model.onnx") -> Artifact:
    """Describe ``data`` as an artifact: size, sha256, and the sha256 of every chunk."""
    import hashlib

    chunks = tuple(hashlib.sha256(data[i : i + chunk_size]).hexdigest() for i in range(0, len(data), chunk_size))
    return Artifact(
        filename=filename,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        chunk_size=chunk_size,
        chunk_sha256=chunks,
    )


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_ARTIFACT_BYTES",
    "SCHEMA",
    "SEARCH_ANGLES",
    "AngleSearch",
    "AnomalySpec",
    "Artifact",
    "Histogram",
    "InputSpec",
    "Manifest",
    "OperatingPoint",
    "PreprocessSpec",
    "Quantization",
    "Reference",
    "Registration",
    "SelfTest",
    "SelfTestCase",
    "Target",
    "Thresholds",
    "artifact_for",
    "parse_manifest",
]
