"""``edgeline broker ...`` and ``edgeline keys ...`` end to end through the CLI, including a production
mosquitto.conf rendered by the CLI and run as-is by a real Mosquitto."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cloud_registry.security.passwords import PasswordFile
from cloud_registry.security.pki import Pki
from converters.keys import KeyPaths
from edgeline.cli.main import cli
from edgeline.core.mqtt_link import LinkSettings, MqttLink, TlsSettings
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import find_mosquitto, free_port, wait_port
from tests.security.conftest import REGISTRY, TOPICS, Inbox, Locked


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.mark.parametrize(
    "command",
    [
        ["broker"],
        ["broker", "ca", "init"],
        ["broker", "cert", "issue"],
        ["broker", "cert", "revoke"],
        ["broker", "cert", "crl"],
        ["broker", "cert", "list"],
        ["broker", "passwd", "set"],
        ["broker", "passwd", "delete"],
        ["broker", "passwd", "list"],
        ["broker", "config", "example"],
        ["broker", "config", "render"],
        ["keys", "init"],
        ["keys", "rotate"],
        ["keys", "revoke"],
        ["keys", "show"],
        ["keys", "publish-revocations"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 4


def test_ca_and_certificates(tmp_path: Path) -> None:
    d = str(tmp_path / "pki")
    assert run("broker", "cert", "issue", "--pki", d, "--device", "dev-a").exit_code == 1  # no CA yet
    assert run("broker", "ca", "init", "--pki", d).exit_code == 0
    assert run("broker", "ca", "init", "--pki", d).exit_code == 1  # no silent overwrite
    issued = run("broker", "cert", "issue", "--pki", d, "--device", "dev-a", "--json")
    assert issued.exit_code == 0, issued.output
    info = json.loads(issued.output)
    assert info["kind"] == "device" and Path(info["cert"]).exists() and Path(info["key"]).exists()
    assert run("broker", "cert", "issue", "--pki", d, "--registry").exit_code == 0
    assert (Path(d) / "registry" / "registry.crt").exists()
    srv = run("broker", "cert", "issue", "--pki", d, "--server", "broker", "--host", "127.0.0.1")
    assert srv.exit_code == 0
    bad = run("broker", "cert", "issue", "--pki", d, "--server", "broker")
    assert bad.exit_code == 2 and "--host" in bad.output
    both = run("broker", "cert", "issue", "--pki", d, "--device", "x", "--registry", "y")
    assert both.exit_code == 2 and "exactly one" in both.output
    wild = run("broker", "cert", "issue", "--pki", d, "--device", "dev/#")
    assert wild.exit_code == 1 and "device identity" in wild.output
    assert run("broker", "cert", "revoke", "--pki", d, "dev-a").exit_code == 0
    listed = json.loads(run("broker", "cert", "list", "--pki", d, "--json").output)
    assert {r["name"]: bool(r["revoked_at"]) for r in listed} == {"dev-a": True, "registry": False, "broker": False}
    assert run("broker", "cert", "revoke", "--pki", d, "dev-a").exit_code == 1
    assert run("broker", "cert", "crl", "--pki", d, "--valid-days", "30").exit_code == 0


def test_passwd_commands(tmp_path: Path) -> None:
    f = tmp_path / "passwd"
    out = tmp_path / "dev-a.secret"
    assert run("broker", "passwd", "set", "--file", str(f), "dev-a", "--out", str(out)).exit_code == 0
    secret = out.read_text().strip()
    assert len(secret) >= 40 and (out.stat().st_mode & 0o077) == 0
    assert PasswordFile(f).check("dev-a", secret)
    assert run("broker", "passwd", "set", "--file", str(f), "dev-b", "--password-stdin", input="pw-b\n").exit_code == 0
    assert PasswordFile(f).check("dev-b", "pw-b")
    assert run("broker", "passwd", "set", "--file", str(f), "dev-c", "--password-stdin", input="\n").exit_code == 1
    assert run("broker", "passwd", "list", "--file", str(f)).output.split() == ["dev-a", "dev-b"]
    assert run("broker", "passwd", "delete", "--file", str(f), "dev-a").exit_code == 0
    missing = run("broker", "passwd", "delete", "--file", str(f), "dev-a")
    assert missing.exit_code == 1 and "not in" in missing.output
    f.write_text("dev-x:plain\n")
    assert run("broker", "passwd", "list", "--file", str(f)).exit_code == 1


def test_config_render_errors_name_the_key(tmp_path: Path) -> None:
    spec = tmp_path / "b.toml"
    spec.write_text(run("broker", "config", "example").output.replace("auth = ", "authentication = "))
    result = run("broker", "config", "render", str(spec))
    assert result.exit_code == 1 and "authentication" in result.output


@pytest.mark.broker
def test_rendered_production_config_runs_in_mosquitto(tmp_path: Path, pki: Pki) -> None:
    """`edgeline broker config render` output, unmodified except for a 'user' line and local paths, is
    what a real Mosquitto 2.0 runs: TLS up, a device with its certificate connects, anonymous refused."""
    binary = find_mosquitto()
    if binary is None:
        pytest.fail("mosquitto is not installed")
    port = free_port()
    example = run("broker", "config", "example").output
    etc = "/etc/mosquitto/edgeline"
    local = (
        example.replace(f"{etc}/ca.crt", str(pki.ca_cert_path))
        .replace(f"{etc}/server/broker.crt", str(pki.cert_path("server", "broker")))
        .replace(f"{etc}/server/broker.key", str(pki.key_path("server", "broker")))
        .replace(f"{etc}/crl.pem", str(pki.crl_path))
        .replace(f"{etc}/acl", str(tmp_path / "out" / "acl"))
        .replace('"/var/lib/mosquitto/"', f'"{tmp_path}/"')
        .replace('log_dest = "syslog"', f'log_dest = "file {tmp_path}/mosquitto.log"')
        .replace("port = 8883", f"port = {port}")
        .replace('bind = "0.0.0.0"', 'bind = "127.0.0.1"')
        .replace('"press-01"', '"dev-a"')
    )
    spec = tmp_path / "broker.toml"
    spec.write_text(local)
    rendered = run("broker", "config", "render", str(spec), "--out", str(tmp_path / "out"), "--check-files", "--json")
    assert rendered.exit_code == 0, rendered.output
    conf = tmp_path / "out" / "mosquitto.conf"
    user = pwd.getpwuid(os.getuid()).pw_name
    conf.write_text(f"user {user}\n" + conf.read_text())
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    links: list[MqttLink] = []
    try:
        assert wait_port("127.0.0.1", port, 10), proc.stderr.read().decode() if proc.poll() is not None else ""
        tls = TlsSettings(
            ca_file=str(pki.ca_cert_path),
            cert_file=str(pki.cert_path("device", "dev-a")),
            key_file=str(pki.key_path("device", "dev-a")),
        )
        device = MqttLink(LinkSettings(port=port, client_id="dev-a", tls=tls))
        links.append(device)
        device.connect(timeout=10)
        device.publish_sync(Topics().device_state("dev-a"), b"up")  # the example spec's default fleet
        anonymous = MqttLink(LinkSettings(port=port, tls=TlsSettings(ca_file=str(pki.ca_cert_path))))
        links.append(anonymous)
        anonymous.start()
        assert not anonymous.wait_connected(1.0)
    finally:
        for link in links:
            link.stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_keys_lifecycle_through_the_cli(tmp_path: Path, locked: Locked) -> None:
    d = str(tmp_path / "keys")
    init = run("keys", "init", "--keys", d, "--backup-root")
    assert init.exit_code == 0 and "backup root" in init.output
    paths = KeyPaths(Path(d))
    assert len(TrustStore.load(paths.trust).roots) == 2
    old = json.loads(run("keys", "show", "--keys", d).output)["signing_key"]
    refused = run("keys", "revoke", "--keys", d, old)
    assert refused.exit_code == 1 and "rotate first" in refused.output
    assert run("keys", "rotate", "--keys", d).exit_code == 0
    assert run("keys", "revoke", "--keys", d, old).exit_code == 0
    shown = json.loads(run("keys", "show", "--keys", d).output)
    assert shown["revoked"] == [old] and shown["retired"][0]["revoked"] is True and shown["signing_key"] != old

    device = locked.connect("dev-a")
    inbox = Inbox()
    device.subscribe(TOPICS.trust_revocations(), inbox)
    s = locked.settings(REGISTRY)
    assert s.tls is not None
    args = ["keys", "publish-revocations", "--keys", d, "--broker-host", s.host, "--broker-port", str(s.port)]
    args += ["--ca-file", s.tls.ca_file]
    args += ["--topic-root", TOPICS.root, "--fleet", TOPICS.fleet]
    if locked.auth == "mtls":
        args += ["--cert-file", str(s.tls.cert_file), "--key-file", str(s.tls.key_file)]
    else:
        secret = tmp_path / "registry.secret"
        secret.write_text(locked.passwords[REGISTRY] + "\n")
        args += ["--username", REGISTRY, "--password-file", str(secret)]
    published = run(*args)
    assert published.exit_code == 0, published.output
    assert inbox.wait_for(TOPICS.trust_revocations())
    assert json.loads(inbox.items[0][1])["revoked"] == [old]
