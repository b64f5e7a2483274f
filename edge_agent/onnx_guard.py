"""Refuse an ONNX model that refers to external data, before ONNX Runtime opens it.

A tensor of an ONNX model may keep its bytes in another file (``data_location = EXTERNAL`` and an
``external_data`` entry ``location``, relative to the model's directory). ONNX Runtime before 1.24
follows ``../`` out of that directory (measured with 1.17.0 to 1.23.0: a signed model whose
initializer pointed at ``../secret.bin`` loaded it); whatever its version, an edgeline model is one
self-contained file whose sha256 is signed, so a model with external data is refused here, whatever
the path says.

The device has no ``onnx`` package, so this is a minimal protobuf walk over the wire format: it
descends only into the messages that can hold a tensor (model, graph, node, attribute, function,
training info, sparse tensor) and skips everything else by its length, without copying. It is
conservative: a tensor with any ``data_location`` but DEFAULT, or any ``external_data`` entry, is
refused, and so is anything it cannot parse (a truncated varint, a field that overruns its message,
a group, a wrong wire type for a field it descends into, nesting deeper than ``MAX_DEPTH``, or more
than ``MAX_FIELDS`` fields). Field numbers are those of onnx/onnx.proto3 (stable since IR version 3).
"""

from __future__ import annotations

import mmap
from pathlib import Path

from edge_agent.errors import ModelLoadError

MAX_DEPTH = 48  # graphs nest through If/Loop/Scan bodies; real models stay far below
MAX_FIELDS = 4_000_000  # about 2 s of walking; a 100k-node graph needs about 1M

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5

#: message -> {field number: message it holds}. Only fields that lead to a TensorProto.
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_DATA_LOCATION = 14
_TENSOR_EXTERNAL_DATA = 13


class ExternalDataError(ModelLoadError):
    """The model refers to external data, or cannot be checked for it."""


class _Walk:
    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.fields = 0

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise ExternalDataError("the model is not a valid ONNX protobuf (bad varint)")
            byte = self.buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, pos
            shift += 7

    def message(self, kind: str, pos: int, end: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ExternalDataError(f"the model nests deeper than {MAX_DEPTH} levels: refused unchecked")
        children = _CHILDREN[kind]
        while pos < end:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise ExternalDataError(f"the model has more than {MAX_FIELDS} fields: refused unchecked")
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise ExternalDataError("the model is not a valid ONNX protobuf (field 0)")
            if kind == "tensor":
                self.tensor_field(number, wire, pos, end)
            if wire == _VARINT:
                _, pos = self.varint(pos, end)
            elif wire == _I64:
                pos += 8
            elif wire == _I32:
                pos += 4
            elif wire == _LEN:
                length, pos = self.varint(pos, end)
                if length > end - pos:
                    raise ExternalDataError("the model is not a valid ONNX protobuf (a field overruns)")
                child = children.get(number)
                if child is not None:
                    self.message(child, pos, pos + length, depth + 1)
                pos += length
            else:
                raise ExternalDataError(f"the model is not a valid ONNX protobuf (wire type {wire})")
            if pos > end:
                raise ExternalDataError("the model is not a valid ONNX protobuf (truncated)")
            if wire != _LEN and number in children:
                raise ExternalDataError(f"the model is not a valid ONNX protobuf (field {number} of a {kind})")

    def tensor_field(self, number: int, wire: int, pos: int, end: int) -> None:
        if number == _TENSOR_EXTERNAL_DATA:
            raise ExternalDataError("the model refers to external data (a tensor has external_data): refused")
        if number == _TENSOR_DATA_LOCATION:
            if wire != _VARINT:
                raise ExternalDataError("the model is not a valid ONNX protobuf (data_location)")
            value, _ = self.varint(pos, end)
            if value != 0:
                raise ExternalDataError("the model refers to external data (data_location EXTERNAL): refused")


def check_no_external_data(model: Path | bytes) -> None:
    """Raise :class:`ExternalDataError` unless ``model`` (a file or its bytes) is a self-contained ONNX
    model: no tensor anywhere (initializers, constants, subgraphs, functions) with external data."""
    if isinstance(model, bytes | bytearray | memoryview):
        if not len(model):
            raise ExternalDataError("the model is empty")
        _Walk(memoryview(model)).message("model", 0, len(model), 0)
        return
    try:
        with open(model, "rb") as fh:
            size = Path(model).stat().st_size
            if size == 0:
                raise ExternalDataError("the model file is empty")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    _Walk(view).message("model", 0, len(view), 0)
                finally:
                    view.release()
    except OSError as exc:
        raise ModelLoadError(f"cannot read the model {Path(model).name}: {exc.strerror}") from exc
