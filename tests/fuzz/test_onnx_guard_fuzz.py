"""Fuzz of the ONNX external-data guard (``edge_agent.onnx_guard``), the parser that reads every model
file the device receives before ONNX Runtime does. Inputs: real models (self-contained, and with
external data in an initializer, a Constant node, an If branch or a sparse initializer) with bytes
flipped, inserted, deleted or truncated, and any bytes. Property: only ``ExternalDataError`` comes
out, and whatever the guard accepts that onnx's own parser reads has no external data anywhere."""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto

from edge_agent.onnx_guard import ExternalDataError, check_no_external_data
from tests.factories import tiny_model
from tests.fuzz.conftest import fuzz_settings
from tests.security.test_onnx_external_data import SHAPES

CLEAN = tiny_model().onnx_bytes
HOSTILE = [make("../x.bin").SerializeToString() for make in SHAPES.values()]
SEEDS = [CLEAN, *HOSTILE]


def tensors(m: onnx.ModelProto) -> Iterator[TensorProto]:
    def graph(g: onnx.GraphProto) -> Iterator[TensorProto]:
        yield from g.initializer
        for s in g.sparse_initializer:
            yield s.values
            yield s.indices
        for n in g.node:
            yield from attrs(n.attribute)

    def attrs(attributes: object) -> Iterator[TensorProto]:
        for a in attributes:  # type: ignore[attr-defined]
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from graph(a.g)
            for sub in a.graphs:
                yield from graph(sub)
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values
            for s in a.sparse_tensors:
                yield s.values

    yield from graph(m.graph)
    for f in m.functions:
        for n in f.node:
            yield from attrs(n.attribute)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@fuzz_settings(ci=200)  # 1,500 with --full; the 100,000 are in test_bulk_fuzz.py
@given(damaged() | st.binary(max_size=300))
def test_the_guard_raises_only_its_error_and_never_passes_external_data(data: bytes) -> None:
    try:
        check_no_external_data(data)
    except ExternalDataError:
        return
    try:
        m = onnx.load_from_string(data)
    except Exception:  # onnx's parser refuses it: so would ONNX Runtime
        return
    assert not any(t.data_location == TensorProto.EXTERNAL or len(t.external_data) for t in tensors(m))


def test_the_seeds_are_what_they_claim() -> None:
    check_no_external_data(CLEAN)
    for h in HOSTILE:
        assert any(t.data_location == TensorProto.EXTERNAL for t in tensors(onnx.load_from_string(h)))
