"""Every rejection on a real broker: the device sends a ``rejected`` event with a machine-readable
reason, keeps serving its current model, and the deployment leaves nothing half-installed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from cloud_registry.publisher import reissue
from converters.keys import SigningKey, init_keys, load_signing_key
from edge_agent.updater.machine import Limits
from edgeline.core.protocol.delivery import envelope_bytes
from edgeline.core.protocol.manifest import Manifest, Target, parse_manifest
from tests.delivery.conftest import BuiltBundle, Cloud, Device, read_bundle, variant, wait_for
from tests.factories import write_tiny_bundle


def nan_model(data: bytes) -> bytes:
    """The same model with its probabilities multiplied by NaN."""
    m = onnx.load_from_string(data)
    for node in m.graph.node:
        for i, out in enumerate(node.output):
            if out == "probabilities":
                node.output[i] = "probabilities_raw"
    m.graph.initializer.append(numpy_helper.from_array(np.array([np.nan], dtype=np.float32), "nan_const"))
    m.graph.node.append(helper.make_node("Mul", ["probabilities_raw", "nan_const"], ["probabilities"]))
    return m.SerializeToString()


@pytest.fixture(scope="module")
def stranger_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    d = tmp_path_factory.mktemp("stranger")
    init_keys(d)
    return load_signing_key(d)


@pytest.fixture(scope="module")
def selftest_liar(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> BuiltBundle:
    path = tmp_path_factory.mktemp("liar") / "b"
    return read_bundle(write_tiny_bundle(path, signing_key, version=7, seed=5, corrupt_expected=True))


def running_v1(cloud: Cloud, frames: list[Any], bundles: dict[int, BuiltBundle], **updater: Any) -> Device:
    dev = cloud.device("dev-r", frames=frames, **updater)
    cloud.deploy(bundles[1], "dev-r")
    assert wait_for(lambda: dev.version() == 1 and dev.plugin.state == "COMMITTED"), dev.kinds()
    return dev


def expect_rejection(cloud: Cloud, dev: Device, reason: str, version: int = 1) -> None:
    assert wait_for(lambda: reason in dev.reasons()), (dev.reasons(), dev.kinds())
    ev = next(e for e in dev.events.events if e.reason == reason)
    assert ev.kind == "rejected" and ev.detail
    assert wait_for(lambda: any(e.reason == reason for e in cloud.seen_events))  # it went over MQTT too
    time.sleep(0.1)
    assert dev.version() == version  # the current model keeps serving
    assert dev.plugin.state in ("IDLE", "COMMITTED")
    assert dev.plugin.record.pending is None
    assert dev.link.state.last_error.startswith(reason)
    assert not any(dev.plugin.disk.downloads.glob("*.part"))
    frames_before = dev.agent.frames_done
    assert wait_for(lambda: dev.agent.frames_done > frames_before + 3)


def publish_raw(cloud: Cloud, device_id: str, payload: bytes) -> None:
    cloud.link.publish_sync(cloud.topics.device_desired(device_id), payload, 1, False)


Case = Callable[[Cloud, dict[int, BuiltBundle], Any], None]


def _bad_signature(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    man = reissue(bundles[2].manifest, sequence=cloud.next_sequence(), devices=("dev-r",))
    env = cloud.publisher.sign(man)
    tampered = env.model_copy(update={"body": {**env.body, "version": 99}})
    cloud.publisher.publish_artifact(man, bundles[2].data)
    publish_raw(cloud, "dev-r", envelope_bytes(tampered))


def _unknown_key(cloud: Cloud, bundles: dict[int, BuiltBundle], stranger: SigningKey) -> None:
    man = reissue(bundles[2].manifest, sequence=cloud.next_sequence(), devices=("dev-r",))
    publish_raw(cloud, "dev-r", envelope_bytes(stranger.sign(man.to_body())))


def _replay(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    old = reissue(bundles[2].manifest, sequence=0, devices=("dev-r",))  # below the accepted sequence 1
    publish_raw(cloud, "dev-r", envelope_bytes(cloud.publisher.sign(old)))


def _reused_sequence(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    other = reissue(bundles[2].manifest, sequence=1, devices=("dev-r",))  # v1 went out with sequence 1
    publish_raw(cloud, "dev-r", envelope_bytes(cloud.publisher.sign(other)))


def _expired(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    man = reissue(
        bundles[2].manifest, sequence=cloud.next_sequence(), devices=("dev-r",), valid_s=60, now=time.time() - 3600
    )
    cloud.publisher.publish_desired("dev-r", man)


def _wrong_target(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    man = reissue(bundles[2].manifest, sequence=cloud.next_sequence(), devices=("someone-else",))
    cloud.publisher.publish_desired("dev-r", man)


def _wrong_hardware(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    body = reissue(bundles[2].manifest, sequence=cloud.next_sequence(), devices=("dev-r",)).to_body()
    body["target"] = Target(devices=("dev-r",), hardware_classes=("arm64-small",)).model_dump(mode="json")
    cloud.publisher.publish_desired("dev-r", parse_manifest(body))


def _hash_mismatch(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    man = cloud.deploy(bundles[2], "dev-r", publish_artifact=False)
    bad = bytearray(bundles[2].data[: man.artifact.chunk_size])
    bad[100] ^= 0xFF
    cloud.link.publish_sync(cloud.topics.artifact_chunk(man.artifact.sha256, 0), bytes(bad), 1, True)


def _length_mismatch(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    man = cloud.deploy(bundles[2], "dev-r", publish_artifact=False)
    cloud.link.publish_sync(cloud.topics.artifact_chunk(man.artifact.sha256, 0), bundles[2].data[:-10], 1, True)


def _deploy_v2(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    cloud.deploy(bundles[2], "dev-r")


def _wont_load(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    cloud.deploy(variant(bundles[1], b"not an onnx model " * 64, 5), "dev-r")


def _selftest(cloud: Cloud, bundles: dict[int, BuiltBundle], liar: BuiltBundle) -> None:
    cloud.deploy(liar, "dev-r")


def _nan(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    cloud.deploy(variant(bundles[1], nan_model(bundles[1].data), 6), "dev-r")


def _garbage(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    publish_raw(cloud, "dev-r", b"{not json")


def _no_chunk_hashes(cloud: Cloud, bundles: dict[int, BuiltBundle], extra: Any) -> None:
    body = reissue(bundles[2].manifest, sequence=cloud.next_sequence(), devices=("dev-r",)).to_body()
    body["artifact"]["chunk_sha256"] = []
    cloud.publisher.publish_desired("dev-r", parse_manifest(body))


CASES: dict[str, tuple[Case, str, dict[str, Any]]] = {
    "bad signature": (_bad_signature, "bad_signature", {}),
    "unknown key": (_unknown_key, "unknown_key", {}),
    "replay": (_replay, "replay", {}),
    "sequence reused for another artifact": (_reused_sequence, "replay", {}),
    "expired": (_expired, "expired", {}),
    "wrong target": (_wrong_target, "wrong_target", {}),
    "wrong hardware class": (_wrong_hardware, "wrong_hardware", {}),
    "hash mismatch": (_hash_mismatch, "hash_mismatch", {}),
    "length mismatch": (_length_mismatch, "length_mismatch", {}),
    "oversize artifact": (_deploy_v2, "oversize", {"limits": Limits(max_artifact_bytes=1000, min_free_bytes=0)}),
    "too little free disk": (_deploy_v2, "disk_full", {"free_disk": lambda path: 2000}),
    "model that won't load": (_wont_load, "model_load", {}),
    "fails self-test": (_selftest, "selftest", {}),
    "produces NaN": (_nan, "nan", {}),
    "malformed desired state": (_garbage, "bad_manifest", {}),
    "no chunk hashes": (_no_chunk_hashes, "bad_manifest", {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rejection(
    case: str,
    cloud: Cloud,
    bundles: dict[int, BuiltBundle],
    frames: list[Any],
    stranger_key: SigningKey,
    selftest_liar: BuiltBundle,
) -> None:
    action, reason, overrides = CASES[case]
    dev = running_v1(cloud, frames, bundles)
    for attr, value in overrides.items():  # the device's limits and disk probe, after v1 went in
        setattr(dev.plugin, attr, value)
    extra = {"unknown key": stranger_key, "fails self-test": selftest_liar}.get(case)
    action(cloud, bundles, extra)
    expect_rejection(cloud, dev, reason)


def test_downgrade_is_refused_but_an_authorised_rollback_is_not(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    dev = running_v1(cloud, frames, bundles)
    cloud.deploy(bundles[2], "dev-r")
    assert wait_for(lambda: dev.version() == 2 and dev.plugin.state == "COMMITTED")
    cloud.deploy(bundles[1], "dev-r", publish_artifact=False)
    expect_rejection(cloud, dev, "downgrade", version=2)
    cloud.deploy(bundles[1], "dev-r", publish_artifact=False, allow_downgrade=True)
    assert wait_for(lambda: dev.version() == 1 and dev.plugin.state == "COMMITTED")


def test_revoked_signing_key_is_refused(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any], key_dir: Path, signing_key: SigningKey
) -> None:
    from converters.keys import KeyPaths, RootKey, load_private

    dev = running_v1(cloud, frames, bundles)
    root = RootKey(load_private(KeyPaths(key_dir).root_key))
    cloud.publisher.publish_revocations(root.revoke([signing_key.key_id], serial=1))
    assert wait_for(lambda: signing_key.key_id in dev.plugin.trust.revoked)
    assert wait_for(dev.plugin.disk.revocations_path.exists)
    saved = json.loads(dev.plugin.disk.revocations_path.read_text())
    assert saved["serial"] == 1  # survives a restart
    cloud.deploy(bundles[2], "dev-r")
    expect_rejection(cloud, dev, "revoked_key")


def test_a_newer_deployment_supersedes_one_in_progress(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    dev = running_v1(cloud, frames, bundles)
    cloud.deploy(bundles[2], "dev-r", publish_artifact=False)  # chunks never come
    assert wait_for(lambda: dev.plugin.state == "DOWNLOADING")
    cloud.deploy(bundles[3], "dev-r")
    assert wait_for(lambda: dev.version() == 3 and dev.plugin.state == "COMMITTED")
    assert "superseded" in dev.reasons()


def test_man_is_unchanged_by_reissue(bundles: dict[int, BuiltBundle]) -> None:
    m: Manifest = reissue(bundles[1].manifest, sequence=9, devices=("a",), allow_downgrade=True)
    assert (m.sequence, m.target.devices, m.allow_downgrade) == (9, ("a",), True)
    assert m.artifact == bundles[1].manifest.artifact and m.selftest == bundles[1].manifest.selftest
