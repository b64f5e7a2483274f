"""Tensors of the Open Inference Protocol (KServe V2) on HTTP/REST, in and out: the JSON request and
the binary tensor data extension, checked strictly. Pure functions on bytes; the routes and the model
are :mod:`edge_agent.oip`'s.

A request body is a JSON object, or (binary tensor data extension) a JSON object of
``Inference-Header-Content-Length`` bytes followed by the binary data of the inputs whose
``parameters.binary_data_size`` is set, in the order of the inputs, with nothing after the last.
Binary data is little-endian, row-major; a BYTES element is a 4-byte little-endian length and its
bytes. In JSON, a BYTES element is a string: base64 (the standard alphabet, padded) when the input's
``parameters.content_type`` is ``"base64"`` or when the string is valid base64, else its characters
as bytes (code points up to 255; an encoded image is never valid base64: PNG starts with 0x89 and
JPEG with 0xFF). Every violation raises :class:`OipError` (400 unless said otherwise).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NUMERIC", "OipError", "Tensor", "decode_bytes", "encode_bytes", "encode_response", "parse_request"]

#: the numeric datatypes this API reads or writes, as little-endian numpy dtypes
NUMERIC: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
#: the most elements one input may declare (the body limit bounds the bytes; this bounds the shape)
MAX_ELEMENTS = 1 << 26


class OipError(Exception):
    """A request the protocol refuses: answer ``code`` with ``{"error": message}``."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Tensor:
    """One input: BYTES as a list of bytes objects, any other datatype as an array of its shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]


def parse_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], list[Tensor]]:
    """The request's JSON object and its inputs, with their data (JSON or binary) checked against
    their datatype and shape."""
    if header_length is None:
        head, binary = body, b""
    else:
        if not header_length.isdigit() or len(header_length) > 18:
            raise OipError(f"Inference-Header-Content-Length {header_length[:40]!r} is not a byte count")
        n = int(header_length)
        if n > len(body):
            raise OipError(f"Inference-Header-Content-Length {n} exceeds the body ({len(body)} bytes)")
        head, binary = body[:n], body[n:]
    try:
        doc = json.loads(head)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise OipError(f"the inference request is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise OipError("the inference request must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise OipError("the inference request needs a non-empty 'inputs' list")
    inputs: list[Tensor] = []
    offset = 0
    for i, raw in enumerate(raw_inputs):
        tensor, used = _input(raw, i, binary, offset)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise OipError(f"{len(binary) - offset} bytes of binary data after the last input's")
    return doc, inputs


def _input(raw: object, i: int, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(raw, dict):
        raise OipError(f"input {i} must be a JSON object")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise OipError(f"input {i} needs a 'name'")
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in NUMERIC):
        raise OipError(f"input {name!r}: datatype {str(datatype)[:20]!r} is not one of BYTES, {', '.join(NUMERIC)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise OipError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise OipError(f"input {name!r}: shape {shape} has more than {MAX_ELEMENTS} elements", 413)
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise OipError(f"input {name!r}: 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise OipError(f"input {name!r}: binary_data_size must be a non-negative integer")
        if "data" in raw:
            raise OipError(f"input {name!r} has both 'data' and binary_data_size")
        part = binary[offset : offset + size]
        if len(part) < size:
            raise OipError(
                f"input {name!r}: binary_data_size {size} but {len(binary) - offset} bytes of binary data remain"
            )
        data = _from_binary(name, datatype, part, count)
        used = size
    else:
        if "data" not in raw:
            raise OipError(f"input {name!r} has neither 'data' nor binary_data_size")
        data = _from_json(name, datatype, raw["data"], count, params.get("content_type"))
        used = 0
    if isinstance(data, np.ndarray):
        data = data.reshape(shape)
    return Tensor(name, datatype, tuple(shape), data), used


def _from_binary(name: str, datatype: str, part: bytes, count: int) -> np.ndarray | list[bytes]:
    if datatype == "BYTES":
        items = decode_bytes(part)
        if len(items) != count:
            raise OipError(f"input {name!r}: {len(items)} BYTES elements, its shape says {count}")
        return items
    dtype = NUMERIC[datatype]
    if len(part) != count * dtype.itemsize:
        raise OipError(f"input {name!r}: {len(part)} bytes of {datatype}, its shape needs {count * dtype.itemsize}")
    return np.frombuffer(part, dtype=dtype)


def _from_json(name: str, datatype: str, data: object, count: int, content_type: object) -> np.ndarray | list[bytes]:
    if not isinstance(data, list):
        raise OipError(f"input {name!r}: 'data' must be a list")
    flat = _flatten(data, name)
    if len(flat) != count:
        raise OipError(f"input {name!r}: {len(flat)} elements, its shape says {count}")
    if datatype == "BYTES":
        return [_json_bytes(name, v, content_type == "base64") for v in flat]
    kinds = (bool,) if datatype == "BOOL" else (int, float)
    if not all(isinstance(v, kinds) and (datatype == "BOOL" or not isinstance(v, bool)) for v in flat):
        raise OipError(f"input {name!r}: {datatype} data must be {'booleans' if datatype == 'BOOL' else 'numbers'}")
    try:
        return np.asarray(flat, dtype=NUMERIC[datatype])
    except OverflowError:
        raise OipError(f"input {name!r}: a value does not fit {datatype}") from None


def _flatten(data: list[Any], name: str) -> list[Any]:
    """Row-major elements of a flat or nested JSON list (no deeper than json.loads allowed)."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            if isinstance(v, dict) or v is None:
                raise OipError(f"input {name!r}: 'data' holds {type(v).__name__ if v is not None else 'null'}")
            out.append(v)
        else:
            stack.pop()
    return out


def _json_bytes(name: str, v: object, force_b64: bool) -> bytes:
    if not isinstance(v, str):
        raise OipError(f"input {name!r}: a BYTES element in JSON is a string")
    if force_b64 or (len(v) % 4 == 0 and _B64.fullmatch(v)):
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise OipError(f"input {name!r}: a BYTES element is not valid base64") from None
    try:
        return v.encode("latin-1")
    except UnicodeEncodeError:
        raise OipError(f"input {name!r}: a raw BYTES string holds characters beyond U+00FF") from None


def decode_bytes(part: bytes) -> list[bytes]:
    """A binary BYTES tensor: 4-byte little-endian length, then that many bytes, element after element."""
    items: list[bytes] = []
    off, end = 0, len(part)
    while off < end:
        if end - off < 4:
            raise OipError("binary BYTES data ends inside an element's length")
        (n,) = struct.unpack_from("<I", part, off)
        off += 4
        if n > end - off:
            raise OipError(f"binary BYTES element of {n} bytes but {end - off} remain")
        items.append(part[off : off + n])
        off += n
    return items


def encode_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


@dataclass(frozen=True, slots=True)
class Output:
    """One output tensor: BYTES as a list of bytes objects, any other datatype as an array."""

    name: str
    datatype: str
    data: np.ndarray | list[bytes]

    @property
    def shape(self) -> list[int]:
        return [len(self.data)] if isinstance(self.data, list) else list(self.data.shape)


def encode_response(
    head: dict[str, Any], outputs: Sequence[Output], binary: set[str], encoder: json.JSONEncoder
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when outputs go as binary data (the value of
    ``Inference-Header-Content-Length``; None for a plain JSON body). ``binary`` names the outputs
    sent as binary."""
    docs: list[dict[str, Any]] = []
    parts: list[bytes] = []
    for out in outputs:
        doc: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if out.name in binary:
            if isinstance(out.data, list):
                raw = encode_bytes(out.data)
            else:
                raw = np.ascontiguousarray(out.data, dtype=NUMERIC[out.datatype]).tobytes()
            doc["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        elif isinstance(out.data, list):
            doc["data"] = [b.decode("utf-8", "replace") for b in out.data]
        else:
            doc["data"] = out.data.reshape(-1).tolist()
        docs.append(doc)
    text = encoder.encode({**head, "outputs": docs}).encode("utf-8")
    if not parts:
        return text, None
    return text + b"".join(parts), len(text)
