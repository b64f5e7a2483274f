"""Correctly SIGNED manifests with a hostile field, on a real broker with a real device: the signature
is valid (whoever holds a signing key, or a registry bug, can produce them), so only the schema and
the code that builds paths stand between them and the device's disk.

``artifact.filename`` names the model file inside the slot directory. A path instead of a plain name
(``../A/model.onnx``, ``../../../x``, an absolute path) must be refused before any byte lands, must
never touch the committed slot, and must leave the device serving its model across a restart."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.publisher import reissue
from edge_agent.bundle import child_path, open_bundle
from edge_agent.errors import BundleError, EdgelineError, ManifestError
from edge_agent.updater.slots import SlotDisk
from edgeline.core.protocol.delivery import envelope_bytes
from edgeline.core.protocol.manifest import parse_manifest
from tests.delivery.conftest import BuiltBundle, Cloud, Device, wait_for
from tests.delivery.test_rejections import publish_raw, running_v1, selftest_liar  # noqa: F401


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes (symlinks by target)."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + str(p.readlink())
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def signed_with_filename(cloud: Cloud, b: BuiltBundle, device_id: str, filename: str) -> bytes:
    """A deployment of ``b`` whose signed body names ``filename``; its chunks are on the broker."""
    man = reissue(b.manifest, sequence=cloud.next_sequence(), devices=(device_id,))
    cloud.publisher.publish_artifact(man, b.data)  # chunk topics depend on the hash, not the name
    body: dict[str, Any] = man.to_body()
    body["artifact"]["filename"] = filename
    return envelope_bytes(cloud.signer.sign(body))


def restarted(cloud: Cloud, dev: Device, frames: list[Any]) -> Device:
    """The same device (same state directory) after a restart of its updater."""
    state_dir = dev.plugin.disk.state_dir
    dev.stop()
    cloud.devices.remove(dev)
    return cloud.device("dev-r", frames=frames, state_dir=state_dir)


HOSTILE = {
    "into the committed slot": "../A/model.onnx",
    "outside the state directory": "../../../escaped.onnx",
    "absolute path": "{outside}/absolute.onnx",
    "a directory": "..",
    "the manifest itself": "manifest.json",
    "a hidden name": ".model.onnx",
    "a backslash path": "..\\A\\model.onnx",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_signed_filename_that_is_not_a_plain_name_is_refused_and_touches_nothing(
    case: str,
    cloud: Cloud,
    bundles: dict[int, BuiltBundle],
    frames: list[Any],
    selftest_liar: BuiltBundle,  # noqa: F811
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dev = running_v1(cloud, frames, bundles)
    state_dir = dev.plugin.disk.state_dir
    assert dev.plugin.record.active == "A"
    committed_before = tree(state_dir / "slots" / "A")
    # a model that fails its self-test: rejected after staging if staging is ever reached
    payload = signed_with_filename(cloud, selftest_liar, "dev-r", HOSTILE[case].format(outside=outside))
    publish_raw(cloud, "dev-r", payload)
    assert wait_for(lambda: "rejected" in dev.kinds()), dev.kinds()
    assert dev.reasons() == ["bad_manifest"], (dev.reasons(), dev.events.events[-1].detail)
    assert "filename" in next(e for e in dev.events.events if e.kind == "rejected").detail
    assert dev.version() == 1 and dev.plugin.record.active == "A"
    assert tree(state_dir / "slots" / "A") == committed_before  # the committed slot is untouched
    assert list(outside.iterdir()) == []
    assert not (state_dir.parent / "escaped.onnx").exists()
    assert not any(state_dir.parents[2].glob("escaped.onnx"))
    assert not any(dev.plugin.disk.downloads.glob("*.part"))
    # the device comes up serving its committed model after a restart
    again = restarted(cloud, dev, frames)
    assert wait_for(lambda: again.version() == 1), again.kinds()
    frames_before = again.agent.frames_done
    assert wait_for(lambda: again.agent.frames_done > frames_before + 3)


@pytest.mark.parametrize(
    "name",
    [
        "../A/model.onnx",
        "/etc/passwd",
        "..",
        ".",
        "",
        "a/b.onnx",
        "a\\b.onnx",
        ".hidden",
        "manifest.json",
        "model.onnx\n",
        "model\x00.onnx",
        "x" * 101,
        "mödel.onnx",
    ],
)
def test_the_schema_takes_one_plain_file_name(bundles: dict[int, BuiltBundle], name: str) -> None:
    body = bundles[1].manifest.to_body()
    body["artifact"]["filename"] = name
    with pytest.raises(ManifestError, match=r"artifact\.filename"):
        parse_manifest(body)
    body["artifact"]["filename"] = "model-v2.int8.onnx"
    assert parse_manifest(body).artifact.filename == "model-v2.int8.onnx"


@pytest.mark.parametrize("name", ["../A/model.onnx", "/etc/passwd", "..", "a/b", "a\\b", ".x", "", "x\x00"])
def test_paths_built_from_signed_names_stay_in_their_directory(tmp_path: Path, name: str) -> None:
    """The second line of defence, for a name that did not come through the schema (a stored record)."""
    with pytest.raises(BundleError):
        child_path(tmp_path, name)
    (tmp_path / "link.onnx").symlink_to(tmp_path.parent / "elsewhere.onnx")
    with pytest.raises(BundleError, match="outside"):
        child_path(tmp_path, "link.onnx")
    assert child_path(tmp_path, "model.onnx") == tmp_path / "model.onnx"


def test_staging_never_touches_the_committed_slot(tmp_path: Path, tiny_bundle: Path, signing_key: Any) -> None:
    disk = SlotDisk(tmp_path / "state")
    disk.prepare()
    for f in tiny_bundle.iterdir():
        (disk.slot_dir("A") / f.name).write_bytes(f.read_bytes())
    disk.point_current("A")
    before = tree(disk.slots)
    data = (tiny_bundle / "model.onnx").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    env = signing_key.sign(json.loads((tiny_bundle / "manifest.json").read_text())["body"])
    for slot, name in (("B", "../A/model.onnx"), ("B", "../../x.onnx"), ("A", "model.onnx")):
        part = disk.part_path(sha)
        part.write_bytes(data)
        with pytest.raises(EdgelineError):
            disk.stage(slot, part, name, sha, env)  # type: ignore[arg-type]
        assert tree(disk.slots) == before, (slot, name)
        assert not (tmp_path / "x.onnx").exists()
    disk.stage("B", disk.part_path(sha), "model.onnx", sha, env)
    assert (disk.slot_dir("B") / "model.onnx").read_bytes() == data


def test_a_bundle_on_disk_naming_a_path_does_not_open(
    tmp_path: Path, tiny_bundle: Path, signing_key: Any, trust: Any
) -> None:
    """The bundle an agent is configured with (or a slot after a restart): same rule."""
    d = tmp_path / "bundle"
    d.mkdir()
    (tmp_path / "outside.onnx").write_bytes((tiny_bundle / "model.onnx").read_bytes())
    body = json.loads((tiny_bundle / "manifest.json").read_text())["body"]
    body["artifact"]["filename"] = "../outside.onnx"
    (d / "manifest.json").write_bytes(envelope_bytes(signing_key.sign(body)))
    with pytest.raises(EdgelineError, match="filename"):
        open_bundle(d, trust)
