"""The Open Inference Protocol with an inspection-grade model (a classifier, a good-part model, part
registration): ``anomaly_score`` is in the metadata and the answers, and ``infer`` with the image
gives ``/predict``'s verdict, label, confidence, anomaly score and defect region on the same frames,
foreign objects (verdict ``unknown``) included. A real build on synthetic line frames, served by the
real local API, read with ``tritonclient.http``."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tritonclient.http as th

from converters.inspection_build import build_inspection
from converters.line_gate import LineTargets
from converters.synth import CLASSES, generate_dataset, render_ood, render_part
from edge_agent.http_api import PredictionApi
from edge_agent.model import LoadedModel
from firmware_configs.schema import ApiSection
from tests.agent.helpers import ApiHost


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, key_dir: Path) -> LoadedModel:
    root = tmp_path_factory.mktemp("oip-insp")
    generate_dataset(root / "data", per_class=40, seed=1)
    built = build_inspection(
        root / "data",
        root / "insp",
        name="plates-insp",
        key_dir=key_dir,
        targets=LineTargets(max_false_reject=0.05, max_escape=0.2),
        force_unverified=True,
    )
    m = built.manifest
    assert m.anomaly is not None and m.preprocessing.registration is not None
    return LoadedModel.load(m, built.bundle_dir / m.artifact.filename)


@pytest.fixture(scope="module")
def api(model: LoadedModel) -> Iterator[PredictionApi]:
    server = PredictionApi(ApiHost(model, "oip-insp"), ApiSection(enabled=True, port=0, max_body_bytes=4 << 20))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pngs() -> list[bytes]:
    rng = np.random.default_rng(23)
    frames = [render_part(CLASSES[i % len(CLASSES)], rng) for i in range(12)]
    frames += [render_ood("cat" if i % 2 else "cup", rng) for i in range(4)]
    return [bytes(cv2.imencode(".png", f)[1]) for f in frames]


def predict(api: PredictionApi, png: bytes) -> dict[str, Any]:
    conn = http.client.HTTPConnection(*api.address, timeout=30)
    conn.request("POST", "/predict", body=png)
    resp = conn.getresponse()
    assert resp.status == 200
    doc: dict[str, Any] = json.loads(resp.read())
    conn.close()
    return doc


def test_inspection_outputs_equal_predict(api: PredictionApi, pngs: list[bytes], model: LoadedModel) -> None:
    client = th.InferenceServerClient("{}:{}".format(*api.address), network_timeout=30)
    meta = client.get_model_metadata(model.manifest.name)
    assert {"name": "anomaly_score", "datatype": "FP32", "shape": [-1]} in meta["outputs"]
    records = [predict(api, p) for p in pngs]
    verdicts = {r["verdict"] for r in records}
    assert {"ok", "defect", "unknown"} <= verdicts, verdicts
    assert any(r["region"] is not None for r in records), "some defect should have a region"
    labels = list(model.manifest.labels)
    for png, rec in zip(pngs, records, strict=True):
        i = th.InferInput("IMAGE", [1], "BYTES")
        i.set_data_from_numpy(np.array([png], dtype=object))
        res = client.infer(model.manifest.name, [i])
        assert res.as_numpy("verdict")[0].decode() == rec["verdict"]
        assert res.as_numpy("label")[0].decode() == rec["label"]
        assert res.as_numpy("unknown")[0] == (rec["verdict"] == "unknown")
        assert int(res.as_numpy("class_index")[0]) == (labels.index(rec["label"]) if rec["label"] in labels else -1)
        assert res.as_numpy("confidence")[0] == pytest.approx(rec["confidence"], abs=1e-6)
        assert res.as_numpy("anomaly_score")[0] == pytest.approx(rec["anomaly_score"], abs=1e-5)
        region = res.as_numpy("region")[0]
        if rec["region"] is None:
            assert not region.any()
        else:
            want = [rec["region"][k] for k in ("x", "y", "w", "h")]
            np.testing.assert_allclose(region[:4], want, atol=0.06)  # the record rounds to 0.1 px
            assert region[4] == pytest.approx(rec["region"]["score"], abs=6e-4)
    client.close()
