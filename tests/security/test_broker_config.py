"""Broker spec validation and rendering (pure: no broker needed)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.security.broker_config import (
    acl_rules,
    load_spec,
    parse_spec,
    render_acl,
    render_mosquitto_conf,
    render_security,
    write_broker_files,
)
from cloud_registry.security.errors import SecurityError
from edgeline.core.protocol.topics import Topics


def base(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "auth": "mtls",
        "tls": {"cafile": "/p/ca.crt", "certfile": "/p/s.crt", "keyfile": "/p/s.key", "crlfile": "/p/crl.pem"},
        "registry": ["registry"],
        "observers": ["ingest"],
        "devices": [{"id": "dev-a", "groups": ["line-1"]}, {"id": "dev-b", "groups": []}],
    }
    spec.update(over)
    return spec


def test_example_spec_parses_and_renders() -> None:
    text = resources.files("firmware_configs").joinpath("deploy", "broker-spec.example.toml").read_text("utf-8")
    import tomllib

    spec = parse_spec(tomllib.loads(text), "example")
    conf = render_mosquitto_conf(spec)
    assert "require_certificate true" in conf and "use_identity_as_username true" in conf
    directives = [line.strip() for line in conf.splitlines() if line.strip() and not line.startswith("#")]
    assert "allow_anonymous false" in directives and "allow_anonymous true" not in directives
    assert f"listener {spec.port} {spec.bind}" in conf


def test_acl_is_an_allow_list_built_from_topics() -> None:
    spec = parse_spec(base(fleet="plant1"))
    t = Topics("edgeline", "plant1")
    rules = acl_rules(spec)
    a = dict((topic, access) for access, topic in rules["dev-a"])
    assert a == {
        t.device_desired("dev-a"): "read",
        t.device_shadow("dev-a"): "read",
        t.group_desired("line-1"): "read",
        t.all_artifacts(): "read",
        t.trust_revocations(): "read",
        t.device_state("dev-a"): "write",
        t.device_online("dev-a"): "write",
        t.device_events("dev-a"): "write",
        t.device_telemetry("dev-a"): "write",
        f"{t.device_telemetry('dev-a')}/+": "write",
        t.device_acks("dev-a"): "read",
        t.ingest_capabilities(): "read",
        t.device_config("dev-a"): "read",
        t.group_config("line-1"): "read",
        t.device_config_state("dev-a"): "write",
    }
    registry_writes = {topic for access, topic in rules["registry"] if "write" in access}
    assert registry_writes == {
        t.all_device_desired(),
        t.all_device_shadow(),
        t.all_group_desired(),
        t.all_artifacts(),
        t.trust_revocations(),
        t.all_device_configs(),
        t.all_group_configs(),
    }
    assert all(access == "read" for access, _ in rules["ingest"])
    acl = render_acl(spec)
    # nothing before the first 'user' line: anonymous clients get no rule at all
    before_first_user = acl.split("\nuser ", 1)[0]
    assert not [line for line in before_first_user.splitlines() if line.strip() and not line.startswith("#")]
    assert "pattern" not in acl.replace("# ", "")  # explicit per-identity rules only
    assert "dev-b" not in "".join(line for line in acl.splitlines() if "dev-a" in line)


def test_password_spec_renders_password_file_and_no_client_certs() -> None:
    spec = parse_spec(base(auth="password", password_file="/etc/m/passwd"))
    sec = render_security(spec)
    assert "password_file /etc/m/passwd" in sec
    assert "require_certificate false" in sec and "use_identity_as_username" not in sec
    assert "use_username_as_clientid true" in sec


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"auth": "password"}, "password_file"),
        ({"tls": {"cafile": "/a", "certfile": "/b", "keyfile": "/c"}}, "crlfile"),
        ({"tls": {"cafile": "ca.crt", "certfile": "/b", "keyfile": "/c", "crlfile": "/d"}}, "absolute"),
        ({"acl_file": "acl"}, "absolute"),
        ({"devices": [{"id": "dev+a"}]}, "device id"),
        ({"devices": [{"id": "#"}]}, "device id"),
        ({"devices": [{"id": "a/b"}]}, "device id"),
        ({"devices": [{"id": "x" * 65}]}, "64"),
        ({"devices": [{"id": "ok", "groups": ["line/+"]}]}, "group"),
        ({"devices": [{"id": "ok", "groups": ["g", "g"]}]}, "twice"),
        ({"devices": [{"id": "registry"}]}, "unique"),
        ({"devices": [{"id": "a"}, {"id": "a"}]}, "unique"),
        ({"observers": ["registry"]}, "unique"),
        ({"ingest": ["ingest"]}, "unique"),  # also an observer in base()
        ({"ingest": ["dev-a"]}, "unique"),
        ({"ingest": ["ingest+1"]}, "identity"),
        ({"registry": []}, "registry"),
        ({"fleet": "plant 1"}, "fleet"),
        ({"port": 0}, "port"),
        ({"max_packet_size": 10}, "max_packet_size"),
        ({"bind": "0.0.0.0\nallow_anonymous true"}, "single line"),
        ({"auth": "anonymous"}, "auth"),
        ({"allow_anonymous": True}, "allow_anonymous"),  # unknown key
    ],
)
def test_bad_specs_are_refused_with_the_key_named(over: dict[str, Any], message: str) -> None:
    with pytest.raises(SecurityError, match=message):
        parse_spec(base(**over))


def test_line_injection_through_paths_is_refused() -> None:
    tls = {"cafile": "/a\nallow_anonymous true", "certfile": "/b", "keyfile": "/c", "crlfile": "/d"}
    with pytest.raises(SecurityError, match="line break"):
        parse_spec(base(tls=tls))


def test_load_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="cannot read"):
        load_spec(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('auth = "mtls"\n[tls\n')
    with pytest.raises(SecurityError, match="does not parse"):
        load_spec(bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(SecurityError, match="top level"):
        load_spec(arr)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SecurityError):
        load_spec(binary)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(base()))
    assert load_spec(good).auth == "mtls"


def test_write_broker_files(tmp_path: Path) -> None:
    spec = parse_spec(base())
    files = write_broker_files(spec, tmp_path / "out")
    assert files["mosquitto.conf"].read_text().startswith("# edgeline fleet broker")
    assert "user dev-a" in files["acl"].read_text()
    only = write_broker_files(spec, tmp_path / "sec", full=False)
    assert "persistence" not in only["mosquitto.conf"].read_text()


def test_ingest_identities_write_exactly_the_acknowledgement_topics() -> None:
    """The ingest writes every device's acks and the retained capabilities and nothing else; a device only
    reads its own acks and the capabilities; a read-only observer gets no write at all."""
    spec = parse_spec(base(fleet="plant1", ingest=["ingest-1", "ingest-2"], observers=["dashboard"]))
    t = Topics("edgeline", "plant1")
    rules = acl_rules(spec)
    for name in ("ingest-1", "ingest-2"):
        assert sorted(rules[name]) == sorted(
            [
                ("read", t.all_device_states()),
                ("read", t.all_device_online()),
                ("read", t.all_device_events()),
                ("read", t.all_device_telemetry()),
                ("read", f"{t.all_device_telemetry()}/+"),
                ("write", t.all_device_acks()),
                ("write", t.ingest_capabilities()),
            ]
        )
    assert all(access == "read" for access, _ in rules["dashboard"])
    for name in ("registry", "dashboard"):
        assert not {t.all_device_acks(), t.ingest_capabilities()} & {topic for _, topic in rules[name]}
    for dev in ("dev-a", "dev-b"):
        acks = [(access, topic) for access, topic in rules[dev] if topic.endswith("/acks") or "/ingest/" in topic]
        assert sorted(acks) == sorted([("read", t.device_acks(dev)), ("read", t.ingest_capabilities())])
        # a device writes its own state, presence, events, telemetry and config state only
        assert {topic for access, topic in rules[dev] if "write" in access} == {
            t.device_state(dev),
            t.device_online(dev),
            t.device_events(dev),
            t.device_telemetry(dev),
            f"{t.device_telemetry(dev)}/+",
            t.device_config_state(dev),
        }

    acl = render_acl(spec)
    rule_lines = "\n".join(line for line in acl.splitlines() if line.startswith(("user ", "topic ")))
    blocks = {b.splitlines()[0]: b for b in ("\n" + rule_lines).split("\nuser ")[1:]}
    assert f"topic write {t.all_device_acks()}" in blocks["ingest-1"]
    assert f"topic write {t.ingest_capabilities()}" in blocks["ingest-2"]
    assert f"topic read {t.device_acks('dev-a')}" in blocks["dev-a"]
    assert "dev-b" not in blocks["dev-a"]
    assert "acks" not in blocks["dashboard"] and "capabilities" not in blocks["dashboard"]
    assert acl.count(f"topic write {t.all_device_acks()}") == 2  # the two ingest blocks, no one else
    assert acl.count(f"topic write {t.ingest_capabilities()}") == 2


def test_a_spec_without_ingest_identities_renders_as_before() -> None:
    """An existing spec (the ingest listed among the observers) keeps a read-only ingest: its acknowledgements
    are refused and devices fall back to three sends, as with an ingest that does not acknowledge."""
    spec = parse_spec(base())
    assert spec.ingest == []
    assert "# (none)" in render_acl(spec).split("# --- ingest identities")[1].split("# --- observer")[0]
    assert not [r for r in acl_rules(spec)["ingest"] if "write" in r[0]]
