"""A signed model whose tensors keep their bytes in another file (ONNX external data) is refused by
edgeline before ONNX Runtime opens it, whatever the onnxruntime version: onnxruntime 1.17.0 to 1.23.2
follow ``../`` out of the model's directory (measured below, in a venv of each), and even a path
inside the directory breaks the promise that the signed sha256 pins every byte the model uses."""

from __future__ import annotations

import json
import re
import subprocess
import venv
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_agent.errors import ModelLoadError
from edge_agent.model import make_session
from edge_agent.onnx_guard import ExternalDataError, check_no_external_data
from tests.delivery.conftest import BuiltBundle, Cloud, variant, wait_for
from tests.delivery.test_rejections import running_v1

ROOT = Path(__file__).resolve().parents[2]


def external(t: TensorProto, location: str, length: int = 16) -> TensorProto:
    """``t`` with its bytes moved to ``location`` (as onnx's own external-data writer records it)."""
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def add_model(location: str) -> onnx.ModelProto:
    """y = x + W, W (4 floats) in external data at ``location``."""
    w = external(numpy_helper.from_array(np.zeros(4, np.float32), "W"), location)
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def in_constant(location: str) -> onnx.ModelProto:
    m = add_model(location)
    w = m.graph.initializer.pop()
    m.graph.node.insert(0, helper.make_node("Constant", [], ["W"], value=w))
    return m


def in_subgraph(location: str) -> onnx.ModelProto:
    """The external tensor sits in the ``then`` branch of an If node."""
    inner = add_model(location).graph
    inner.ClearField("input")  # If branches take no inputs; x comes from the outer scope
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], then_branch=inner, else_branch=inner)
    g = helper.make_graph(
        [node],
        "outer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [cond],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def in_sparse(location: str) -> onnx.ModelProto:
    m = add_model(location)
    values = m.graph.initializer.pop()
    values.name = "W"
    values.ClearField("dims")
    values.dims.append(4)
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "W_idx")
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    return m


def location_only(location: str) -> onnx.ModelProto:
    m = add_model(location)
    m.graph.initializer[0].ClearField("external_data")  # EXTERNAL, and no entry at all
    return m


SHAPES = {"initializer": add_model, "Constant node": in_constant, "If subgraph": in_subgraph, "sparse": in_sparse}
LOCATIONS = ["../secret.bin", "/etc/passwd", "inside.bin", "manifest.json"]


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_external_data_anywhere_is_refused_before_onnx_runtime(tmp_path: Path, shape: str, location: str) -> None:
    data = SHAPES[shape](location).SerializeToString()
    with pytest.raises(ExternalDataError, match="external data"):
        check_no_external_data(data)
    slot = tmp_path / "slot"
    slot.mkdir()
    (slot / "inside.bin").write_bytes(bytes(64))
    (tmp_path / "secret.bin").write_bytes(bytes(64))
    path = slot / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match="external data"):
        make_session(path)
    with pytest.raises(ModelLoadError, match="external data"):
        make_session(data)


def test_a_data_location_of_external_without_entries_is_refused() -> None:
    with pytest.raises(ExternalDataError, match="data_location"):
        check_no_external_data(location_only("x.bin").SerializeToString())


def test_self_contained_models_pass(tiny_bundle: Path, tmp_path: Path) -> None:
    from tests.delivery.conftest import padded_model

    data = (tiny_bundle / "model.onnx").read_bytes()
    check_no_external_data(data)
    check_no_external_data(tiny_bundle / "model.onnx")
    m = add_model("x")
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones(4, np.float32), "W"))
    for model in (m, in_subgraph("x")):
        if model is not m:
            model.graph.node[0].attribute[0].g.initializer[0].CopyFrom(
                numpy_helper.from_array(np.ones(4, np.float32), "W")
            )
            model.graph.node[0].attribute[1].g.CopyFrom(model.graph.node[0].attribute[0].g)
        check_no_external_data(model.SerializeToString())
        out = make_session(model.SerializeToString()).run(None, {"x": np.zeros(4, np.float32)})[0]
        assert out.tolist() == [1.0] * 4
    check_no_external_data(padded_model(data, 2_000_000))


@pytest.mark.parametrize("bad", [b"", b"\x0a", b"\x3a\xff\xff\xff\xff\x0f", b"\x08" + b"\xff" * 11, b"\x0b\x0c"])
def test_what_cannot_be_parsed_is_refused(bad: bytes) -> None:
    with pytest.raises(ExternalDataError):
        check_no_external_data(bad)


def test_a_signed_model_with_external_data_is_rejected_and_the_committed_model_serves(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    """On the device: an unused initializer reads the slot's own manifest.json as external data.
    onnxruntime 1.32 accepts that (the path is inside the directory) and the model passes its
    self-test: before the guard it was committed."""
    dev = running_v1(cloud, frames, bundles)
    m = onnx.load_from_string(bundles[1].data)
    m.graph.initializer.append(external(numpy_helper.from_array(np.zeros(4, np.float32), "leak"), "manifest.json"))
    cloud.deploy(variant(bundles[1], m.SerializeToString(), 8), "dev-r")
    assert wait_for(lambda: "rejected" in dev.kinds()), dev.kinds()
    ev = next(e for e in dev.events.events if e.kind == "rejected")
    assert ev.reason == "model_load" and "external data" in ev.detail, ev
    assert dev.version() == 1 and dev.plugin.record.active == "A"


# -- the onnxruntime versions themselves ------------------------------------------------------------
CHILD = r"""
import json, sys
from pathlib import Path
import onnxruntime as ort
from edge_agent.onnx_guard import ExternalDataError, check_no_external_data
out = {"version": ort.__version__, "ort": {}, "edgeline": {}}
for path in sys.argv[1:]:
    name = Path(path).stem
    try:
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        out["ort"][name] = "loaded"
    except Exception as exc:
        out["ort"][name] = "refused: " + str(exc).splitlines()[0][:120]
    try:
        check_no_external_data(Path(path))
        out["edgeline"][name] = "accepted"
    except ExternalDataError as exc:
        out["edgeline"][name] = "refused: " + str(exc)
print(json.dumps(out))
"""


def declared_minimum() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'"onnxruntime>=([0-9.]+)"', text)
    assert found, "pyproject.toml declares no onnxruntime minimum"
    return found.group(1)


def ort_venv(version: str) -> Path:
    """A venv with the system site packages and onnxruntime==``version`` over them, kept under
    /tmp between runs (built once: about 20 s and 15 MB from PyPI)."""
    home = Path("/tmp/edgeline-ort-venvs") / version
    python = home / "bin" / "python"
    ok = home / ".ready"
    if not ok.exists():
        venv.EnvBuilder(system_site_packages=True, with_pip=True, clear=True).create(home)
        pins = [f"onnxruntime=={version}"] + (["numpy<2"] if tuple(map(int, version.split(".")[:2])) < (1, 19) else [])
        res = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert res.returncode == 0, f"cannot install onnxruntime {version}: {res.stderr[-2000:]}"
        ok.touch()
    return python


@pytest.mark.slow
@pytest.mark.parametrize("which", ["declared minimum", "1.17.0"])
def test_onnxruntime_versions_and_the_guard(tmp_path: Path, which: str) -> None:
    """With the oldest onnxruntime pyproject.toml admits, its own guard refuses ``../`` and absolute
    paths AND edgeline's refuses every external reference; with 1.17.0 (the old minimum) onnxruntime
    loads ``../secret.bin`` and only edgeline's guard stands."""
    version = declared_minimum() if which == "declared minimum" else which
    slot = tmp_path / "slot"
    slot.mkdir()
    (tmp_path / "secret.bin").write_bytes(bytes(64))
    (slot / "inside.bin").write_bytes(bytes(64))
    models = {"dotdot": "../secret.bin", "absolute": str(tmp_path / "secret.bin"), "inside": "inside.bin"}
    paths = []
    for name, location in models.items():
        (slot / f"{name}.onnx").write_bytes(add_model(location).SerializeToString())
        paths.append(str(slot / f"{name}.onnx"))
    python = ort_venv(version)
    res = subprocess.run(
        [str(python), "-c", CHILD, *paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["version"] == version
    assert all(v.startswith("refused") and "external data" in v for v in got["edgeline"].values()), got
    assert got["ort"]["inside"] == "loaded", got  # a path inside the directory is legal for onnxruntime
    if which == "declared minimum":
        assert got["ort"]["dotdot"].startswith("refused") and got["ort"]["absolute"].startswith("refused"), got
    else:
        assert got["ort"]["dotdot"] == "loaded", got  # why the guard cannot be left to onnxruntime
