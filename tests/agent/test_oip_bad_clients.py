"""Bad clients of the Open Inference Protocol: malformed JSON, wrong datatypes and shapes, truncated or
overlong binary data, a header length beyond the body, oversized bodies, unknown models, and wrong or
missing tokens. Each gets its error in the protocol's shape (``{"error": ...}``) and the connection
closes; nothing smuggled in a body is ever answered, and the API keeps serving good clients. Also the
token rules of the configuration: no start off loopback without a token."""

from __future__ import annotations

import json
import random
import re
import socket
import struct
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
from edge_agent.oip import OpenInference
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.errors import ConfigError
from firmware_configs.schema import ApiSection
from tests.agent.helpers import ApiHost, make_config
from tests.factories import tiny_frames

INFER = "/v2/models/tiny/infer"
SMUGGLED = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture(scope="module")
def model(tiny_bundle: Path, key_dir: Path) -> LoadedModel:
    return load_and_check(tiny_bundle, TrustStore.load(KeyPaths(key_dir).trust))


@pytest.fixture(scope="module")
def api(model: LoadedModel) -> Iterator[PredictionApi]:
    server = PredictionApi(ApiHost(model, "oip-bad"), ApiSection(enabled=True, port=0, max_body_bytes=65536))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def png() -> bytes:
    return bytes(cv2.imencode(".png", tiny_frames(1, seed=3)[0][0])[1])


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def exchange(api: PredictionApi, payload: bytes, timeout: float = 5.0) -> bytes:
    """``payload`` on a fresh connection; everything the server sends until it closes (or goes quiet)."""
    with socket.create_connection(api.address, timeout=timeout) as s:
        s.sendall(payload)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<still open>")
        return b"".join(chunks)


def statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


def binary_request(doc: dict[str, Any], binary: bytes) -> tuple[bytes, str]:
    head = json.dumps(doc).encode()
    return head + binary, f"Inference-Header-Content-Length: {len(head)}\r\n"


def image_doc(size: int, shape: list[int] | None = None, datatype: str = "BYTES") -> dict[str, Any]:
    params = {"binary_data_size": size}
    return {"inputs": [{"name": "IMAGE", "shape": shape or [1], "datatype": datatype, "parameters": params}]}


def bytes_element(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


def good_infer(png: bytes) -> bytes:
    body, extra = binary_request(image_doc(len(png) + 4), bytes_element(png))
    return post(INFER, body, extra)


def bad_requests(png: bytes) -> dict[str, tuple[bytes, int]]:
    elem = bytes_element(png)
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 256], "data": [0.5] * 256}
    cases: dict[str, tuple[bytes, int]] = {
        "malformed-json": (post(INFER, b'{"inputs": [' + SMUGGLED), 400),
        "json-not-an-object": (post(INFER, b"[1, 2, 3]"), 400),
        "not-utf8": (post(INFER, b'{"inputs": "\xff\xfe"}'), 400),
        "deeply-nested": (
            post(INFER, b'{"inputs": [{"name": "input", "data": ' + b"[" * 20000 + b"]" * 20000 + b"}]}"),
            400,
        ),
        "no-inputs": (post(INFER, b'{"inputs": []}'), 400),
        "unknown-input": (post(INFER, json.dumps({"inputs": [{**tensor, "name": "pixels"}]}).encode()), 400),
        "two-inputs": (post(INFER, json.dumps({"inputs": [tensor, tensor]}).encode()), 400),
        "tensor-wrong-shape": (
            post(INFER, json.dumps({"inputs": [{**tensor, "shape": [1, 255], "data": [0.5] * 255}]}).encode()),
            400,
        ),
        "tensor-wrong-datatype": (
            post(INFER, json.dumps({"inputs": [{**tensor, "datatype": "INT32", "data": [1] * 256}]}).encode()),
            400,
        ),
        "tensor-count-mismatch": (post(INFER, json.dumps({"inputs": [{**tensor, "data": [0.5] * 200}]}).encode()), 400),
        "tensor-not-numbers": (post(INFER, json.dumps({"inputs": [{**tensor, "data": ["a"] * 256}]}).encode()), 400),
        "tensor-nan": (
            post(
                INFER,
                b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256], "data": ['
                + b", ".join([b"NaN"] * 256)
                + b"]}]}",
            ),
            400,
        ),
        "image-wrong-datatype": (post(INFER, *binary_request(image_doc(len(elem), datatype="FP32"), elem)), 400),
        "image-wrong-shape": (post(INFER, *binary_request(image_doc(len(elem), shape=[1, 1]), elem)), 400),
        "image-not-an-image": (post(INFER, *binary_request(image_doc(12), bytes_element(b"not an image"))), 400),
        "unknown-output": (
            post(INFER, json.dumps({"inputs": [tensor], "outputs": [{"name": "secret"}]}).encode()),
            400,
        ),
        "truncated-binary": (post(INFER, *binary_request(image_doc(len(elem) + 100), elem)), 400),
        "truncated-bytes-element": (
            post(INFER, *binary_request(image_doc(len(elem)), struct.pack("<I", len(png) + 50) + png)),
            400,
        ),
        "binary-after-the-last-input": (post(INFER, *binary_request(image_doc(len(elem)), elem + SMUGGLED)), 400),
        "header-length-beyond-body": (post(INFER, b'{"inputs": []}', "Inference-Header-Content-Length: 9999\r\n"), 400),
        "header-length-not-a-number": (post(INFER, b'{"inputs": []}', "Inference-Header-Content-Length: -3\r\n"), 400),
        "header-length-repeated": (
            post(
                INFER,
                *binary_request(image_doc(len(elem)), elem)[:1],
                binary_request(image_doc(len(elem)), elem)[1] * 2,
            ),
            400,
        ),
        "binary-without-header-length": (post(INFER, json.dumps(image_doc(len(elem))).encode() + elem), 400),
        "too-many-images": (post(INFER, *binary_request(image_doc(65 * 4, shape=[65]), bytes_element(b"") * 65)), 400),
        "too-many-elements": (
            post(INFER, json.dumps({"inputs": [{**tensor, "shape": [1 << 20, 1 << 20]}]}).encode()),
            413,
        ),
        "oversized-body": (post(INFER, b"x" * 70_000), 413),
        "unknown-model": (post("/v2/models/nope/infer", json.dumps({"inputs": [tensor]}).encode()), 404),
        "unknown-version": (post("/v2/models/tiny/versions/9/infer", json.dumps({"inputs": [tensor]}).encode()), 404),
        "unknown-v2-path": (post("/v2/models/tiny/explain", SMUGGLED), 404),
        "get-infer": (b"GET " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        "post-health": (post("/v2/health/live", SMUGGLED), 405),
    }
    return cases


CASES = list(bad_requests(b"\x89PNG-placeholder"))


@pytest.mark.parametrize("case", CASES)
def test_a_bad_request_gets_its_error_and_the_connection_closes(api: PredictionApi, png: bytes, case: str) -> None:
    request, code = bad_requests(png)[case]
    # followed on the same connection by a good request: after an error nothing more is answered
    raw = exchange(api, request + good_infer(png))
    assert statuses(raw) == [code], raw[:300]
    assert b"Connection: close\r\n" in raw and not raw.endswith(b"<still open>")
    body = raw.split(b"\r\n\r\n", 1)[1]
    doc = json.loads(body)
    assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"]


def test_good_requests_share_a_kept_alive_connection(api: PredictionApi, png: bytes) -> None:
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 256], "data": [0.5] * 256}
    # a raw (not base64) BYTES string in JSON: the image's bytes as code points 0-255
    raw_image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [png.decode("latin-1")]}
    binary_out = {"inputs": [tensor], "parameters": {"binary_data_output": True}}
    payload = (
        good_infer(png)
        + post(INFER, json.dumps({"inputs": [tensor]}).encode())
        + post(INFER, json.dumps({"inputs": [raw_image]}, ensure_ascii=False).encode("utf-8"))
        + post(INFER, json.dumps(binary_out).encode())
        + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    raw = exchange(api, payload)
    assert statuses(raw) == [200, 200, 200, 200, 200], raw[:400]
    assert raw.count(b"Inference-Header-Content-Length: ") == 1  # only the last infer asked for binary outputs
    verdicts = re.findall(rb'"data": \["(ok|defect)"\], "datatype": "BYTES", "name": "verdict"', raw)
    assert len(verdicts) == 3, raw[:2000]


def test_the_api_still_serves_after_the_bad_clients(api: PredictionApi, png: bytes) -> None:
    for request, _ in bad_requests(png).values():
        exchange(api, request)
    host, port = api.address
    c = th.InferenceServerClient(f"{host}:{port}")
    i = th.InferInput("IMAGE", [1], "BYTES")
    i.set_data_from_numpy(np.array([png], dtype=object))
    assert c.infer("tiny", [i]).as_numpy("verdict")[0] in (b"ok", b"defect")
    c.close()


def test_fuzzed_requests_get_an_answer_never_a_crash(model: LoadedModel, png: bytes) -> None:
    """Random byte flips, cuts and header lengths on valid requests: always one of the protocol's
    answers (the handler never raises, which would drop the connection unanswered)."""
    oip = OpenInference(
        ApiHost(model, "fuzz"),
        max_image_pixels=1 << 20,
        next_id=iter(range(10**6)).__next__,
        encoder=json.JSONEncoder(),
    )
    elem = bytes_element(png)
    bin_body, _ = binary_request(image_doc(len(elem)), elem)
    head_len = len(bin_body) - len(elem)
    json_body = json.dumps(
        {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256], "data": [0.25] * 256}],
            "outputs": [{"name": "verdict", "parameters": {"binary_data": True}}],
        }
    ).encode()
    rng = random.Random(14)
    seen: set[int] = set()
    for i in range(400):
        body = bytearray(bin_body if i % 2 else json_body)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(body))
            if op < 0.5:
                body[pos] = rng.randrange(256)
            elif op < 0.75:
                del body[pos:]
                if not body:
                    body = bytearray(b"{")
            else:
                body[pos:pos] = rng.choice([b"[", b"]", b"{", b'"', b",", b"0", b"-1", b"1e999", b"null"])
        length = None if i % 2 == 0 else str(rng.choice([head_len, head_len - 1, head_len + 3, len(body) + 1, 0]))
        reply = oip.handle(
            INFER,
            bytes(body),
            lambda name, n=length: [n] if name == "inference-header-content-length" and n is not None else None,
        )
        assert reply.code in (200, 400, 413, 422), (reply.code, reply.body[:200])
        if reply.code != 200:
            assert set(json.loads(reply.body)) == {"error"}
        seen.add(reply.code)
    assert {200, 400} <= seen


# -- the token ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("token") / "api.token"
    p.write_text(TOKEN + "\n", "utf-8")
    return p


@pytest.fixture(scope="module")
def guarded(model: LoadedModel, token_file: Path) -> Iterator[PredictionApi]:
    """Bound to every address (not loopback), with a token."""
    section = ApiSection(enabled=True, host="0.0.0.0", port=0, token_file=str(token_file))
    server = PredictionApi(ApiHost(model, "oip-tok"), section)
    server.start()
    yield server
    server.stop()


def client_of(api: PredictionApi) -> th.InferenceServerClient:
    return th.InferenceServerClient(f"127.0.0.1:{api.address[1]}")


def headers_of(token: str | None) -> dict[str, str] | None:
    return None if token is None else {"Authorization": f"Bearer {token}"}


def test_the_right_token_is_served(guarded: PredictionApi, png: bytes) -> None:
    c = client_of(guarded)
    h = headers_of(TOKEN)
    assert c.is_server_live(headers=h) and c.is_model_ready("tiny", headers=h)
    i = th.InferInput("IMAGE", [1], "BYTES")
    i.set_data_from_numpy(np.array([png], dtype=object))
    assert c.infer("tiny", [i], headers=h).as_numpy("verdict")[0] in (b"ok", b"defect")
    c.close()


@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789abcdef", TOKEN[:-1], TOKEN + "x"])
def test_a_missing_or_wrong_token_gets_401(guarded: PredictionApi, token: str | None) -> None:
    c = client_of(guarded)
    h = headers_of(token)
    assert not c.is_server_live(headers=h)
    with pytest.raises(InferenceServerException) as exc:
        c.get_model_metadata("tiny", headers=h)
    assert exc.value.status() == "401"
    c.close()


@pytest.mark.parametrize(
    "auth",
    ["", f"Authorization: Basic {TOKEN}\r\n", f"Authorization: Bearer{TOKEN}\r\n", "Authorization: Bearer wrong\r\n"],
)
def test_401_challenges_before_the_body_and_closes(guarded: PredictionApi, png: bytes, auth: str) -> None:
    body, extra = binary_request(image_doc(len(png) + 4), bytes_element(png))
    port = guarded.address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(post(INFER, body, extra + auth) + SMUGGLED)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    assert statuses(raw) == [401], raw[:300]
    assert b'WWW-Authenticate: Bearer realm="edgeline"\r\n' in raw and b"Connection: close\r\n" in raw
    assert set(json.loads(raw.split(b"\r\n\r\n", 1)[1])) == {"error"}


def test_bearer_scheme_is_case_insensitive(guarded: PredictionApi) -> None:
    port = guarded.address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        auth = f"Authorization: bearer {TOKEN}\r\n"
        s.sendall(f"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
        raw = s.recv(65536)
    assert statuses(raw) == [200]


def test_no_api_off_loopback_without_a_token(tmp_path: Path, model: LoadedModel) -> None:
    with pytest.raises(ConfigError, match="token_file"):
        make_config(tmp_path, {"kind": "folder", "path": str(tmp_path)}, api={"enabled": True, "host": "0.0.0.0"})
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        make_config(tmp_path, {"kind": "folder", "path": str(tmp_path)}, api={"enabled": True, "host": host})
    # a section built without validation of `enabled` (or by hand): the API itself refuses to bind
    with pytest.raises(ConfigError, match="not a loopback address"):
        PredictionApi(ApiHost(model, "x"), ApiSection(enabled=False, host="0.0.0.0", port=0))


@pytest.mark.parametrize("content", [None, "", "short", "two tokens-0123456789"])
def test_a_missing_or_weak_token_file_is_refused(tmp_path: Path, model: LoadedModel, content: str | None) -> None:
    p = tmp_path / "token"
    if content is not None:
        p.write_text(content, "utf-8")
    with pytest.raises(ConfigError, match="token_file"):
        PredictionApi(ApiHost(model, "x"), ApiSection(enabled=True, port=0, token_file=str(p)))
