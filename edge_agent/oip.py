"""The Open Inference Protocol (KServe V2, HTTP/REST) on the local API: request in, answer out, no I/O
(:mod:`edge_agent.http_api` reads the request, checks the token and writes the answer; the tensors'
wire format is :mod:`edge_agent.oip_tensors`').

Endpoints (``{v}`` is optional as ``/versions/{v}``; the one model is the one serving the live loop,
named by its manifest, its version the manifest's):

* ``GET /v2/health/live``, ``GET /v2/health/ready`` (ready: a model is serving), ``GET /v2`` (server
  metadata; extensions: ``binary_tensor_data``);
* ``GET /v2/models/{name}[/versions/{v}]`` (model metadata), ``.../ready``;
* ``POST /v2/models/{name}[/versions/{v}]/infer``: ONE input, either :data:`IMAGE` (BYTES, shape
  ``[N]``: encoded images, decoded like ``POST /predict``'s body and inspected by
  :func:`edge_agent.inference.inspect_frame`) or the model's own input (FP32, shape ``[N, *input]``:
  already preprocessed, inspected by :func:`edge_agent.inference.inspect_input`). The outputs
  (:data:`OUTPUTS`) are the verdict fields, one row per image; JSON unless asked as binary
  (``parameters.binary_data`` of a requested output, or ``binary_data_output`` of the request).

Errors are ``{"error": "..."}``: 400 for a malformed request (JSON, datatype, shape, binary data),
404 for an unknown model or version, 413 for too many elements, 422 for an image that cannot be
inspected (as ``/predict``), 503 when no model is serving.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

import numpy as np

from edge_agent.errors import EdgelineError
from edge_agent.image_decode import ImageError, ImageTooLarge, decode_image
from edge_agent.inference import inspect_frame, inspect_input
from edge_agent.model import LoadedModel
from edge_agent.oip_tensors import OipError, Output, Tensor, encode_response, parse_request
from edge_agent.plugins import FrameResult
from edge_agent.verdict import UNKNOWN

__all__ = ["IMAGE", "MAX_BATCH", "OUTPUTS", "OipHost", "OpenInference", "Reply", "methods_of"]

#: the name of the encoded-image input
IMAGE = "IMAGE"
#: the most images (or tensors) one request may carry
MAX_BATCH = 64
SERVER_NAME = "edgeline"
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "onnxruntime_onnx"
#: output name -> (datatype, shape after the batch dimension, meaning); ``anomaly_score`` only for
#: models with a good-part (anomaly) part. ``n`` is the number of classes.
OUTPUTS: dict[str, tuple[str, tuple[int | str, ...], str]] = {
    "verdict": ("BYTES", (), "ok, defect or unknown"),
    "label": ("BYTES", (), "the class named by the decision"),
    "class_index": ("INT32", (), "index of label in the model's labels; -1 for unknown"),
    "confidence": ("FP32", (), "the decision's confidence"),
    "probabilities": ("FP32", ("n",), "the classifier's probabilities, in the order of the labels"),
    "anomaly_score": ("FP32", (), "the good-part model's score (anomaly models only)"),
    "uncertain": ("BOOL", (), "the decision is close to its threshold (review)"),
    "unknown": ("BOOL", (), "not a part the model knows (verdict unknown)"),
    "region": ("FP32", (5,), "defect box x, y, w, h (frame pixels) and peak score; zeros when none"),
    "result_id": ("INT64", (), "the result's id (frame_id of POST /predict's record)"),
}

_PATH = re.compile(r"/v2(?:/health/(live|ready)|/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?)?")
_JSON = "application/json"


class OipHost(Protocol):
    @property
    def current_model(self) -> LoadedModel | None: ...


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    body: bytes
    content_type: str = _JSON
    headers: dict[str, str] = field(default_factory=dict)


def methods_of(path: str) -> tuple[str, ...] | None:
    """The methods a ``/v2`` path answers, None when it is no endpoint of the protocol."""
    m = _PATH.fullmatch(path)
    if m is None:
        return None
    return ("POST",) if m.group(4) == "/infer" else ("GET",)


def _server_version() -> str:
    try:
        return importlib.metadata.version("edgeline")
    except importlib.metadata.PackageNotFoundError:
        return "0"


class OpenInference:
    """The protocol over the host's serving model. ``next_id`` numbers results (shared with
    ``/predict``, so ids never repeat across the API)."""

    def __init__(
        self, host: OipHost, *, max_image_pixels: int, next_id: Callable[[], int], encoder: json.JSONEncoder
    ) -> None:
        self.host = host
        self.max_image_pixels = max_image_pixels
        self.next_id = next_id
        self.encoder = encoder
        self.version = _server_version()

    def handle(self, path: str, body: bytes, header: Callable[[str], list[str] | None]) -> Reply:
        """Answer one request on a path :func:`methods_of` knows, with a method it allows. ``header``
        gives a (lower-case) header's values, None when it is absent."""
        m = _PATH.fullmatch(path)
        assert m is not None
        health, name, version, action = m.groups()
        try:
            if health == "live":
                return self._doc(200, {"live": True})
            if health == "ready":
                ready = self.host.current_model is not None
                return self._doc(200 if ready else 503, {"ready": ready})
            if name is None:
                return self._doc(200, {"name": SERVER_NAME, "version": self.version, "extensions": list(EXTENSIONS)})
            model = self._model(unquote(name), None if version is None else unquote(version))
            if action == "/ready":
                return self._doc(200, {"name": model.manifest.name, "ready": True})
            if action is None:
                return self._doc(200, self.metadata(model))
            lengths = header("inference-header-content-length")
            if lengths is not None and len(lengths) > 1:
                raise OipError("Inference-Header-Content-Length is repeated")
            return self._infer(model, body, None if lengths is None else lengths[0])
        except OipError as exc:
            return self._doc(exc.code, {"error": exc.message})

    def _doc(self, code: int, doc: dict[str, Any]) -> Reply:
        return Reply(code, self.encoder.encode(doc).encode("utf-8"))

    def _model(self, name: str, version: str | None) -> LoadedModel:
        model = self.host.current_model
        if model is None:
            raise OipError("no model is serving", 503)
        m = model.manifest
        if name != m.name:
            raise OipError(f"unknown model {name[:100]!r} (serving {m.name!r})", 404)
        if version is not None and version != str(m.version):
            raise OipError(f"model {m.name!r} has no version {version[:40]!r} (serving {m.version})", 404)
        return model

    @staticmethod
    def output_names(model: LoadedModel) -> list[str]:
        return [o for o in OUTPUTS if o != "anomaly_score" or model.manifest.anomaly is not None]

    def metadata(self, model: LoadedModel) -> dict[str, Any]:
        m = model.manifest
        n = len(m.labels)
        outputs = [
            {"name": o, "datatype": OUTPUTS[o][0], "shape": [-1, *(n if d == "n" else d for d in OUTPUTS[o][1])]}
            for o in self.output_names(model)
        ]
        return {
            "name": m.name,
            "versions": [str(m.version)],
            "platform": PLATFORM,
            "inputs": [
                {"name": IMAGE, "datatype": "BYTES", "shape": [-1]},
                {"name": model.input_name, "datatype": "FP32", "shape": [-1, *m.input.shape]},
            ],
            "outputs": outputs,
            "parameters": {"labels": list(m.labels), "sha256": m.artifact.sha256},
        }

    # -- infer --------------------------------------------------------------------------------------
    def _infer(self, model: LoadedModel, body: bytes, header_length: str | None) -> Reply:
        doc, inputs = parse_request(body, header_length)
        if len(inputs) != 1:
            raise OipError(f"one input is expected ({IMAGE} or {model.input_name!r}), got {len(inputs)}")
        names = self.output_names(model)
        wanted, binary = self._requested(doc, names)
        results = self._inspect(model, inputs[0])
        by_name = {o.name: o for o in self._outputs(model, results)}
        outputs = [by_name[n] for n in wanted]
        m = model.manifest
        head: dict[str, Any] = {"model_name": m.name, "model_version": str(m.version)}
        if isinstance(doc.get("id"), str):
            head["id"] = doc["id"]
        payload, json_len = encode_response(head, outputs, binary, self.encoder)
        if json_len is None:
            return Reply(200, payload)
        return Reply(200, payload, "application/octet-stream", {"Inference-Header-Content-Length": str(json_len)})

    @staticmethod
    def _requested(doc: dict[str, Any], names: list[str]) -> tuple[list[str], set[str]]:
        """The outputs asked for (all when none is named) and those to send as binary data."""
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise OipError("the request's 'parameters' must be an object")
        default_binary = params.get("binary_data_output", False) is True
        asked = doc.get("outputs")
        if asked is None:
            return names, set(names) if default_binary else set()
        if not isinstance(asked, list):
            raise OipError("'outputs' must be a list")
        wanted: list[str] = []
        binary: set[str] = set()
        for o in asked:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise OipError("each requested output is an object with a 'name'")
            if o["name"] not in names:
                raise OipError(f"no output {o['name'][:100]!r} (outputs: {', '.join(names)})")
            p = o.get("parameters") or {}
            if not isinstance(p, dict):
                raise OipError(f"output {o['name']!r}: 'parameters' must be an object")
            if p.get("binary_data", default_binary) is True:
                binary.add(o["name"])
            wanted.append(o["name"])
        return wanted, binary

    def _inspect(self, model: LoadedModel, t: Tensor) -> list[FrameResult]:
        shape = tuple(model.manifest.input.shape)
        if t.name == IMAGE:
            if t.datatype != "BYTES" or len(t.shape) != 1:
                raise OipError(f"input {IMAGE} is BYTES of shape [N] (got {t.datatype} {list(t.shape)})")
            assert isinstance(t.data, list)
            self._batch(len(t.data))
            return [self._image(model, b) for b in t.data]
        if t.name != model.input_name:
            raise OipError(f"no input {t.name[:100]!r} (inputs: {IMAGE}, {model.input_name})")
        if t.datatype != "FP32" or t.shape[1:] != shape or len(t.shape) != len(shape) + 1:
            raise OipError(
                f"input {model.input_name!r} is FP32 of shape [N, {', '.join(map(str, shape))}]"
                f" (got {t.datatype} {list(t.shape)})"
            )
        assert isinstance(t.data, np.ndarray)
        self._batch(t.shape[0])
        if not np.all(np.isfinite(t.data)):
            raise OipError(f"input {model.input_name!r} holds NaN or infinity")
        return [self._run(inspect_input, model, x) for x in t.data]

    @staticmethod
    def _batch(n: int) -> None:
        if not 1 <= n <= MAX_BATCH:
            raise OipError(f"a request carries 1 to {MAX_BATCH} images or tensors, not {n}")

    def _image(self, model: LoadedModel, encoded: bytes) -> FrameResult:
        try:
            img = decode_image(encoded, self.max_image_pixels)
        except ImageTooLarge as exc:
            raise OipError(str(exc), 422) from None
        except ImageError as exc:
            raise OipError(f"input {IMAGE}: {exc}") from None
        return self._run(inspect_frame, model, img)

    def _run(
        self, inspect: Callable[[LoadedModel, np.ndarray, int], FrameResult], model: LoadedModel, x: np.ndarray
    ) -> FrameResult:
        try:
            return inspect(model, x, self.next_id())
        except EdgelineError as exc:
            raise OipError(str(exc), 422) from None

    @staticmethod
    def _outputs(model: LoadedModel, results: list[FrameResult]) -> list[Output]:
        labels = model.manifest.labels
        vs = [r.verdict for r in results]
        regions = np.zeros((len(vs), 5), dtype=np.float32)
        for i, v in enumerate(vs):
            if v.region is not None:
                regions[i] = (v.region.x, v.region.y, v.region.w, v.region.h, v.region.score)
        outs = [
            Output("verdict", "BYTES", [v.verdict.encode() for v in vs]),
            Output("label", "BYTES", [v.label.encode() for v in vs]),
            Output("class_index", "INT32", np.array([_index(labels, v.label) for v in vs], dtype=np.int32)),
            Output("confidence", "FP32", np.array([v.confidence for v in vs], dtype=np.float32)),
            Output("probabilities", "FP32", np.stack([r.probabilities for r in results]).astype(np.float32)),
            Output("uncertain", "BOOL", np.array([v.uncertain for v in vs], dtype=np.bool_)),
            Output("unknown", "BOOL", np.array([v.verdict == UNKNOWN for v in vs], dtype=np.bool_)),
            Output("region", "FP32", regions),
            Output("result_id", "INT64", np.array([v.frame_id for v in vs], dtype=np.int64)),
        ]
        if model.manifest.anomaly is not None:
            score = [np.nan if v.anomaly_score is None else v.anomaly_score for v in vs]
            outs.append(Output("anomaly_score", "FP32", np.array(score, dtype=np.float32)))
        return outs


def _index(labels: tuple[str, ...], label: str) -> int:
    return labels.index(label) if label in labels else -1
