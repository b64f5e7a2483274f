"""The pure rules of remote configuration, without a broker: document bounds, signature and trust
checks, the replay floor, what a document may set, hostile paths, the station check, the plan (hot or
restart), the trial, the durable record and the start after a crash during a trial."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from converters.keys import KeyPaths, RootKey, SigningKey, init_keys, load_private, load_signing_key, rotate_signing_key
from edge_agent.identity import DeviceIdentity
from edge_agent.remote_config.boot import effective_config
from edge_agent.remote_config.errors import ConfigRefused
from edge_agent.remote_config.overlay import (
    allowed_hosts,
    check_allowed,
    check_hostile,
    check_hosts,
    classify,
    diff,
    merge,
)
from edge_agent.remote_config.prepare import prepare
from edge_agent.remote_config.store import Applied, ConfigRecord, ConfigStore
from edge_agent.remote_config.trial import ConfigTrial, Health
from edge_agent.remote_config.verify import check_version, verify_document
from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.remote_config import parse_config_document, parse_config_payload
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.loader import parse_config
from firmware_configs.remote_config_section import RemoteConfigSection
from firmware_configs.writer import render_toml

ME = DeviceIdentity("dev-1", "generic", ("line-a",))


def body(version: int = 5, config: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    now = time.time()
    out = {"schema": "edgeline.config/1", "version": version, "issued_at": now, "expires_at": now + 60}
    return out | {"config": config if config is not None else {"decision": {"review": 0.2}}} | kw


def base_dict(tmp_path: Path) -> dict[str, Any]:
    frames = tmp_path / "frames"
    frames.mkdir(exist_ok=True)
    (frames / "a.png").write_bytes(b"x")
    return {
        "device": {"id": "dev-1", "groups": ["line-a"]},
        "source": {"kind": "folder", "path": str(frames)},
        "model": {"bundle": str(tmp_path / "bundle")},
        "updater": {"state_dir": str(tmp_path / "state"), "trust_file": str(tmp_path / "trust.json")},
        "sinks": {"jsonl": {"path": str(tmp_path / "logs" / "v.jsonl")}},
        "remote_config": {"enabled": True},
    }


# -- the document ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sinks": {"webhook": {"url": "x" * 2000}}}, "at most 1024"),
        ({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}, "nested deeper"),
        ({"sinks": {"jsonl": {"max_bytes": 2**60}}}, "out of range"),
        ({"line": {"list": list(range(100))}}, "100 items"),
        ({"decision": 0.5}, "holds tables"),
        ({"line": {"list": [{"a": 1}]}}, "plain values only"),
    ],
)
def test_an_unbounded_overlay_is_refused_before_any_schema(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_config_document(body(config=config))


def test_document_fields_and_payloads_are_checked() -> None:
    with pytest.raises(ProtocolError, match="expires_at"):
        parse_config_document(body(expires_at=0))
    with pytest.raises(ProtocolError, match="extra"):
        parse_config_document(body(extra=1))
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        parse_config_payload(b"{" + b" " * 70_000 + b"}")
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_config_payload(b'{"body": ')
    assert parse_config_payload(b"") is None


# -- trust ------------------------------------------------------------------------------------------
def test_signature_trust_target_expiry_and_replay(signing_key: SigningKey, trust: TrustStore, key_dir: Path) -> None:
    env = signing_key.sign(body(7))
    assert verify_document(env, trust, ME, time.time()).version == 7
    tampered = env.model_copy(update={"body": body(7, {"decision": {"review": 0.9}})})
    with pytest.raises(ConfigRefused) as e:
        verify_document(tampered, trust, ME, time.time())
    assert e.value.reason == "bad_signature"
    with pytest.raises(ConfigRefused) as e:
        verify_document(signing_key.sign(body(8, target={"devices": ["other"]})), trust, ME, time.time())
    assert e.value.reason == "wrong_target"
    group_doc = signing_key.sign(body(8, target={"groups": ["line-a"]}))
    assert verify_document(group_doc, trust, ME, time.time()).version == 8
    with pytest.raises(ConfigRefused) as e:
        verify_document(env, trust, ME, time.time() + 120)
    assert e.value.reason == "expired"
    with pytest.raises(ConfigRefused) as e:
        verify_document(env, trust, ME, time.time() + 400 * 86400)
    assert e.value.reason == "key_expired"
    with pytest.raises(ConfigRefused) as e:
        verify_document(env, TrustStore(), ME, time.time())
    assert e.value.reason == "unknown_key"
    root = RootKey(load_private(KeyPaths(key_dir).root_key))
    assert trust.apply_revocations(root.revoke([signing_key.key_id], serial=99))
    with pytest.raises(ConfigRefused) as e:
        verify_document(env, trust, ME, time.time())
    assert e.value.reason == "revoked_key"
    doc = parse_config_document(body(7))
    check_version(doc, 6)
    for floor in (7, 8):
        with pytest.raises(ConfigRefused) as e:
            check_version(doc, floor)
        assert e.value.reason == "replay"


def test_a_rotated_signing_key_signs_config_like_manifests(tmp_path: Path) -> None:
    paths = init_keys(tmp_path / "keys")
    old = load_signing_key(tmp_path / "keys")
    rotate_signing_key(paths)
    new = load_signing_key(tmp_path / "keys")
    trust = TrustStore.load(paths.trust)
    assert new.key_id != old.key_id
    assert verify_document(new.sign(body(3)), trust, ME, time.time()).version == 3
    root = RootKey(load_private(paths.root_key))
    trust.apply_revocations(root.revoke([old.key_id], serial=1))
    with pytest.raises(ConfigRefused) as e:
        verify_document(old.sign(body(4)), trust, ME, time.time())
    assert e.value.reason == "revoked_key"
    assert verify_document(new.sign(body(5)), trust, ME, time.time()).version == 5


# -- what a document may set ----------------------------------------------------------------------
def test_merge_diff_and_plan() -> None:
    base = {"sinks": {"jsonl": {"path": "/a", "fsync": False}}, "telemetry": {"window_s": 60}}
    merged = merge(base, {"sinks": {"jsonl": {"path": "/b"}}, "telemetry": {"epsilon": 1.0}})
    assert merged == {"sinks": {"jsonl": {"path": "/b", "fsync": False}}, "telemetry": {"window_s": 60, "epsilon": 1.0}}
    keys = [c.key for c in diff(base, merged)]
    assert keys == ["sinks.jsonl.path", "telemetry.epsilon"]
    plan = classify([*keys, "telemetry.window_s", "decision.threshold", "source.path"])
    assert plan.hot == ("sinks.jsonl.path", "telemetry.window_s", "decision.threshold")
    assert plan.restart == ("telemetry.epsilon", "source.path")


@pytest.mark.parametrize(
    ("overlay", "reason", "detail"),
    [
        ({"device": {"id": "x"}}, "forbidden", "identity"),
        ({"cloud": {"host": "evil.example"}}, "forbidden", "fleet link"),
        ({"updater": {"trust_file": "/tmp/t.json"}}, "forbidden", "trust"),
        ({"remote_config": {"allowed_dirs": ["/"]}}, "forbidden", "how documents"),
        ({"telemetry": {"pseudonym_key_file": "/k"}}, "forbidden", "pseudonym"),
        ({"supervisor": {"hang_timeout_s": 0}}, "forbidden", "hang watch"),
        ({"sinks": {"command": {"argv": ["id"]}}}, "hostile", "command"),
        ({"nosuch": {"a": 1}}, "forbidden", "not a section"),
    ],
)
def test_keys_no_document_may_set(overlay: dict[str, Any], reason: str, detail: str) -> None:
    with pytest.raises(ConfigRefused) as e:
        check_allowed(overlay)
    assert e.value.reason == reason and detail in e.value.detail


def test_hostile_paths(tmp_path: Path) -> None:
    allowed, state = tmp_path / "allowed", tmp_path / "state"
    allowed.mkdir()
    state.mkdir()
    (allowed / "link").symlink_to(state)

    def refused(path: str) -> str:
        with pytest.raises(ConfigRefused) as e:
            check_hostile({"sinks": {"jsonl": {"path": path}}}, [str(allowed)], [str(state)])
        assert e.value.reason == "hostile"
        return e.value.detail

    check_hostile({"sinks": {"jsonl": {"path": str(allowed / "v.jsonl")}}}, [str(allowed)], [str(state)])
    assert "without '..'" in refused(f"{allowed}/../state/updater.json")
    assert "absolute" in refused("v.jsonl")
    assert "outside" in refused("/etc/passwd")
    assert "own state" in refused(str(allowed / "link" / "updater.json"))  # through a symbolic link
    assert "not a path" in refused("")
    assert "not a path" in refused("/a\x00b")


def test_verdicts_go_to_loopback_or_allowed_hosts_only() -> None:
    base = {"sinks": {"webhook": {"url": "https://mes.plant.example:8443/v"}}}
    hosts = allowed_hosts(base, ["line-broker"])
    assert hosts == {"mes.plant.example", "line-broker"}
    for ok in (
        {"sinks": {"mqtt": {"host": "127.0.0.1"}}},
        {"sinks": {"mqtt": {"host": "::1"}}},
        {"sinks": {"mqtt": {"host": "LINE-BROKER"}}},
        {"sinks": {"webhook": {"url": "http://localhost:9000/x"}}},
        {"sinks": {"webhook": {"url": "https://mes.plant.example/other"}}},
    ):
        check_hosts(ok, hosts)
    for bad in (
        {"sinks": {"mqtt": {"host": "collector.example.net"}}},
        {"sinks": {"webhook": {"url": "https://203.0.113.9/steal"}}},
        {"sinks": {"webhook": {"url": "https://mes.plant.example@evil.example/x"}}},
    ):
        with pytest.raises(ConfigRefused) as e:
            check_hosts(bad, hosts)
        assert e.value.reason == "hostile" and "is not allowed" in e.value.detail


def test_prepare_validates_with_the_device_schema_and_the_station(tmp_path: Path) -> None:
    base = base_dict(tmp_path)
    running_cfg = parse_config(base)
    protected = [str(tmp_path / "state")]

    def run(overlay: dict[str, Any]) -> Any:
        return prepare(parse_config_document(body(9, overlay)), base, base, running_cfg, protected)

    p = run({"sinks": {"jsonl": {"include": "defects"}}, "inference": {"stats_every": 0}})
    assert p.plan.hot == ("sinks.jsonl.include",) and p.plan.restart == ("inference.stats_every",)
    assert p.config.sinks.jsonl is not None and p.config.sinks.jsonl.include == "defects"
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({"sinks": {"jsonl": {"inclde": "all"}}}, "invalid", "unknown key"),
        ({"inference": {"threads": 10_000}}, "invalid", "inference.threads"),
        ({"source": {"kind": "usb"}}, "invalid", "needs the key 'index'"),
        ({"source": {"path": str(tmp_path / "nothing")}}, "no_station", "no such image folder"),
    ]
    for overlay, reason, detail in bad:
        with pytest.raises(ConfigRefused) as e:
            run(overlay)
        assert (e.value.reason, e.value.version) == (reason, 9) and detail in e.value.detail, e.value
    strict = parse_config(merge(base, {"remote_config": {"allow_restart": False}}))
    with pytest.raises(ConfigRefused) as e:
        prepare(parse_config_document(body(9, {"inference": {"stats_every": 0}})), base, base, strict, protected)
    assert e.value.reason == "forbidden" and "allow_restart" in e.value.detail


# -- the trial --------------------------------------------------------------------------------------
def test_trial_passes_on_time_and_frames_and_fails_closed() -> None:
    spec = RemoteConfigSection(trial_s=1.0, trial_frames=5, trial_timeout_s=3.0)
    ok = Health("RUNNING", "RUNNING", 100, {"jsonl": 0})
    t = ConfigTrial(1, spec, 0.0, ok, frozenset({"jsonl"}))
    assert t.judge(0.5, Health("RUNNING", "RUNNING", 110, {"jsonl": 0})) is None
    assert t.judge(1.2, Health("RUNNING", "RUNNING", 103, {"jsonl": 0})) is None
    assert t.judge(1.2, Health("RUNNING", "RUNNING", 105, {"jsonl": 0})) == (True, "")
    assert t.judge(3.5, Health("RUNNING", "RUNNING", 102, {})) == (False, "2 of 5 frames in 3.5 s")
    failed = t.judge(0.1, Health("RUNNING", "FAILED", 100, {}))
    assert failed is not None and not failed[0] and "camera FAILED" in failed[1]
    assert t.judge(0.1, Health("RUNNING", "RUNNING", 100, {"jsonl": 2})) == (
        False,
        "sink jsonl failed 2 write(s) during the trial",
    )


# -- the record and the start -----------------------------------------------------------------------
def test_record_survives_and_a_trial_interrupted_is_rolled_back_at_start(
    tmp_path: Path, signing_key: SigningKey, key_dir: Path
) -> None:
    base = base_dict(tmp_path) | {"model": {"bundle": str(tmp_path / "b"), "trust_file": str(KeyPaths(key_dir).trust)}}
    path = tmp_path / "agent.toml"
    sections = {k: v for k, v in base.items() if k != "sinks"} | {"sinks.jsonl": base["sinks"]["jsonl"]}
    path.write_text(render_toml(sections))
    store = ConfigStore(tmp_path / "state" / "config")
    committed = signing_key.sign(body(3, {"inference": {"stats_every": 3}}, target={"devices": ["dev-1"]}))
    trial = signing_key.sign(body(4, {"inference": {"stats_every": 4}}))
    rec = ConfigRecord()
    rec.begin(Applied(3, committed.model_dump(mode="json"), 1.0, ("inference.stats_every",), restart=True))
    rec.commit()
    rec.begin(Applied(4, trial.model_dump(mode="json"), 2.0, ("inference.stats_every",), restart=True))
    store.save(rec)
    # first start after the restart it asked for: the trial's config, counted as one boot
    assert effective_config(path).inference.stats_every == 4
    assert store.load().trial is not None and store.load().trial.boots == 1  # type: ignore[union-attr]
    # started again with the trial still open (it crashed or was killed): back to the committed one
    assert effective_config(path).inference.stats_every == 3
    after = store.load()
    assert after.trial is None and after.floor == 4
    assert after.last_rollback is not None
    assert (after.last_rollback.version, after.last_rollback.reason) == (4, "crashed")
    assert json.loads((store.dir / "base.json").read_text())["device"]["id"] == "dev-1"
    # a record that cannot be read: the device's own file, and nothing else
    store.record_path.write_text("{not json")
    assert effective_config(path).inference.stats_every == 10
    # a record whose committed document was altered on disk: not used
    rec2 = ConfigRecord()
    forged = committed.model_dump(mode="json")
    forged["body"]["config"] = {"inference": {"stats_every": 99}}
    rec2.begin(Applied(3, forged, 1.0))
    rec2.commit()
    store.save(rec2)
    assert effective_config(path).inference.stats_every == 10
