"""The Open Inference Protocol with the standard client (``tritonclient.http``, its defaults) against a
real local API serving a real signed bundle: health, metadata, readiness, and ``infer`` with the
image as BYTES (binary, the client's default, and JSON) or as an already preprocessed FP32 tensor.
Verdicts equal ``POST /predict``'s for the same frames."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from converters.keys import KeyPaths
from edge_agent.http_api import PredictionApi
from edge_agent.inference import load_and_check
from edge_agent.model import LoadedModel
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.schema import ApiSection
from tests.agent.helpers import ApiHost
from tests.factories import tiny_frames

N_FRAMES = 12


@pytest.fixture(scope="module")
def model(tiny_bundle: Path, key_dir: Path) -> LoadedModel:
    return load_and_check(tiny_bundle, TrustStore.load(KeyPaths(key_dir).trust))


@pytest.fixture(scope="module")
def api(model: LoadedModel) -> Iterator[PredictionApi]:
    server = PredictionApi(ApiHost(model, "oip-1"), ApiSection(enabled=True, port=0, max_body_bytes=1 << 20))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(api: PredictionApi) -> Iterator[th.InferenceServerClient]:
    host, port = api.address
    c = th.InferenceServerClient(f"{host}:{port}", connection_timeout=10.0, network_timeout=10.0)
    yield c
    c.close()


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return tiny_frames(N_FRAMES, seed=11)[0]


@pytest.fixture(scope="module")
def pngs(frames: list[np.ndarray]) -> list[bytes]:
    return [bytes(cv2.imencode(".png", f)[1]) for f in frames]


def predict(api: PredictionApi, png: bytes) -> dict[str, Any]:
    host, port = api.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("POST", "/predict", body=png)
    resp = conn.getresponse()
    assert resp.status == 200
    doc: dict[str, Any] = json.loads(resp.read())
    conn.close()
    return doc


def image_input(pngs: list[bytes], *, binary: bool = True) -> th.InferInput:
    i = th.InferInput("IMAGE", [len(pngs)], "BYTES")
    if binary:
        i.set_data_from_numpy(np.array(pngs, dtype=object))
    else:  # JSON: BYTES elements as base64 strings
        i.set_data_from_numpy(np.array([base64.b64encode(p) for p in pngs], dtype=object), binary_data=False)
    return i


def text(v: bytes | str) -> str:
    """A BYTES element as the client gives it: bytes from binary data, str from JSON."""
    return v.decode() if isinstance(v, bytes) else str(v)


def assert_same_as_predict(result: th.InferResult, records: list[dict[str, Any]], labels: list[str]) -> None:
    verdicts = [text(v) for v in result.as_numpy("verdict")]
    assert verdicts == [r["verdict"] for r in records]
    assert [text(v) for v in result.as_numpy("label")] == [r["label"] for r in records]
    assert result.as_numpy("class_index").tolist() == [labels.index(r["label"]) for r in records]
    np.testing.assert_allclose(result.as_numpy("confidence"), [r["confidence"] for r in records], rtol=0, atol=1e-6)
    assert result.as_numpy("uncertain").tolist() == [r["uncertain"] for r in records]
    assert result.as_numpy("unknown").tolist() == [r["verdict"] == "unknown" for r in records]


def test_health_readiness_and_server_metadata(client: th.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("tiny")
    assert client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("tiny", "2")
    assert not client.is_model_ready("other")
    meta = client.get_server_metadata()
    assert meta["name"] == "edgeline"
    assert "binary_tensor_data" in meta["extensions"]
    assert isinstance(meta["version"], str) and meta["version"]


def test_model_metadata_names_inputs_and_outputs(client: th.InferenceServerClient, model: LoadedModel) -> None:
    meta = client.get_model_metadata("tiny")
    assert meta == client.get_model_metadata("tiny", "1")
    assert meta["name"] == "tiny"
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]}
    assert inputs == {"IMAGE": ("BYTES", [-1]), model.input_name: ("FP32", [-1, *model.manifest.input.shape])}
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
    n = len(model.manifest.labels)
    assert outputs["verdict"] == ("BYTES", [-1])
    assert outputs["class_index"] == ("INT32", [-1])
    assert outputs["confidence"] == ("FP32", [-1])
    assert outputs["probabilities"] == ("FP32", [-1, n])
    assert outputs["uncertain"] == ("BOOL", [-1]) and outputs["unknown"] == ("BOOL", [-1])
    assert outputs["result_id"] == ("INT64", [-1])
    assert "anomaly_score" not in outputs  # the tiny model has no good-part model
    assert meta["parameters"]["labels"] == list(model.manifest.labels)


def test_unknown_model_or_version_is_404(client: th.InferenceServerClient, pngs: list[bytes]) -> None:
    for call in (
        lambda: client.get_model_metadata("nope"),
        lambda: client.get_model_metadata("tiny", "7"),
        lambda: client.infer("nope", [image_input(pngs[:1])]),
        lambda: client.infer("tiny", [image_input(pngs[:1])], model_version="7"),
    ):
        with pytest.raises(InferenceServerException) as exc:
            call()
        assert exc.value.status() == "404"
        assert "nope" in exc.value.message() or "7" in exc.value.message()


def test_infer_binary_image_equals_predict(
    client: th.InferenceServerClient, api: PredictionApi, pngs: list[bytes], model: LoadedModel
) -> None:
    records = [predict(api, p) for p in pngs]
    assert len({r["verdict"] for r in records}) == 2, "the frames should give both verdicts"
    labels = list(model.manifest.labels)
    results = [client.infer("tiny", [image_input([p])]) for p in pngs]
    for res, rec in zip(results, records, strict=True):
        # the client's default: every output came back as binary data
        assert all("binary_data_size" in o["parameters"] for o in res.get_response()["outputs"])
        assert_same_as_predict(res, [rec], labels)
        assert res.as_numpy("probabilities").shape == (1, len(labels))
        assert res.as_numpy("region").shape == (1, 5)
    ids = [int(r.as_numpy("result_id")[0]) for r in results]
    assert len(set(ids)) == len(ids) and all(i > max(r["frame_id"] for r in records) for i in ids)


def test_infer_json_image_and_a_batch(
    client: th.InferenceServerClient, api: PredictionApi, pngs: list[bytes], model: LoadedModel
) -> None:
    records = [predict(api, p) for p in pngs[:5]]
    outputs = [th.InferRequestedOutput(n, binary_data=False) for n in ("verdict", "label", "confidence")]
    outputs += [th.InferRequestedOutput(n, binary_data=False) for n in ("class_index", "uncertain", "unknown")]
    res = client.infer("tiny", [image_input(pngs[:5], binary=False)], outputs=outputs, request_id="req-9")
    doc = res.get_response()
    assert doc["id"] == "req-9" and doc["model_name"] == "tiny" and doc["model_version"] == "1"
    assert [o["name"] for o in doc["outputs"]] == [
        "verdict",
        "label",
        "confidence",
        "class_index",
        "uncertain",
        "unknown",
    ]
    assert all("data" in o and "parameters" not in o for o in doc["outputs"])
    assert_same_as_predict(res, records, list(model.manifest.labels))
    assert res.as_numpy("probabilities") is None  # not asked for


def test_infer_tensor_input_binary_and_json(
    client: th.InferenceServerClient,
    api: PredictionApi,
    frames: list[np.ndarray],
    pngs: list[bytes],
    model: LoadedModel,
) -> None:
    records = [predict(api, p) for p in pngs]
    x = np.stack([model.preprocessor(cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_UNCHANGED)) for p in pngs])
    assert x.dtype == np.float32 and x.shape == (len(pngs), *model.manifest.input.shape)
    labels = list(model.manifest.labels)
    for binary in (True, False):
        t = th.InferInput(model.input_name, list(x.shape), "FP32")
        t.set_data_from_numpy(x, binary_data=binary)
        res = client.infer("tiny", [t])
        assert_same_as_predict(res, records, labels)
        # one session.run per row, as the API runs them (a batched run differs in the last bits)
        direct = np.concatenate([model.run(x[i : i + 1]).probabilities for i in range(len(x))])
        np.testing.assert_array_equal(res.as_numpy("probabilities"), direct)


def test_results_stay_in_order_over_one_kept_alive_connection(
    client: th.InferenceServerClient, pngs: list[bytes]
) -> None:
    """Many requests on the client's pooled connection: each answer belongs to its own request."""
    first = [client.infer("tiny", [image_input([p])]).as_numpy("probabilities")[0] for p in pngs]
    again = [client.infer("tiny", [image_input([p])]).as_numpy("probabilities")[0] for p in pngs]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert len({tuple(np.round(p, 6)) for p in first}) > 1


def test_not_ready_without_a_model(pngs: list[bytes]) -> None:
    server = PredictionApi(ApiHost(None, "oip-2"), ApiSection(enabled=True, port=0))
    server.start()
    try:
        host, port = server.address
        c = th.InferenceServerClient(f"{host}:{port}")
        assert c.is_server_live()
        assert not c.is_server_ready()
        assert not c.is_model_ready("tiny")
        with pytest.raises(InferenceServerException) as exc:
            c.infer("tiny", [image_input(pngs[:1])])
        assert exc.value.status() == "503"
        c.close()
    finally:
        server.stop()
