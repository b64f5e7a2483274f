"""``edgeline broker``: the locked-down fleet broker: its configuration, a CA, certificates, passwords."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click

from edgeline.cli.options import json_option, renamed_option


def PKI_DIR(fn: Any) -> Any:  # noqa: N802 - used as a decorator like the option objects
    """``--pki DIR`` (former spelling ``--dir``, hidden)."""
    out = click.option(
        "--pki",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("pki"),
        show_default=True,
        help="PKI directory (CA, certificates, CRL, index).",
    )(fn)
    return renamed_option("--dir", "directory")(out)


JSON_OUT = json_option


@click.group()
def broker() -> None:
    """Lock down the fleet broker: TLS, per-device ACLs, password or client-certificate authentication.

    \b
    Typical mTLS setup:
      edgeline broker ca init --pki pki
      edgeline broker cert issue --pki pki --server broker --host mqtt.plant.example --host 10.0.0.5
      edgeline broker cert issue --pki pki --registry
      edgeline broker cert issue --pki pki --device press-01
      edgeline broker config example > broker.toml      # edit devices, paths
      edgeline broker config render broker.toml --out /etc/mosquitto/edgeline
    """


# --- ca --------------------------------------------------------------------------------------------


@broker.group()
def ca() -> None:
    """The certificate authority that signs the broker's and the clients' TLS certificates."""


@ca.command("init")
@PKI_DIR
@click.option("--cn", "common_name", default="edgeline broker CA", show_default=True, help="CA common name.")
@click.option("--valid-days", type=float, default=3650.0, show_default=True, help="CA certificate lifetime.")
@click.option("--force", is_flag=True, help="Replace an existing CA: every certificate it issued stops working.")
def ca_init(directory: Path, common_name: str, valid_days: float, force: bool) -> None:
    """Create a CA key (ca.key, keep it offline), its certificate (ca.crt) and an empty CRL."""
    from cloud_registry.security.pki import Pki

    pki = Pki.init(directory, common_name=common_name, valid_days=valid_days, force=force)
    click.echo(f"CA key          {pki.ca_key_path}  (keep it offline)")
    click.echo(f"CA certificate  {pki.ca_cert_path}  (install on the broker, devices and registry hosts)")
    click.echo(f"CRL             {pki.crl_path}")


# --- cert ------------------------------------------------------------------------------------------


@broker.group()
def cert() -> None:
    """Issue, list and revoke TLS certificates made by the CA."""


@cert.command("issue")
@PKI_DIR
@click.option("--device", "device", metavar="ID", help="A device client certificate; CN = the device id.")
@click.option(
    "--registry",
    "registry",
    is_flag=False,
    flag_value="registry",
    default=None,
    metavar="[NAME]",
    help="A registry client certificate (NAME defaults to 'registry').",
)
@click.option("--observer", metavar="NAME", help="A read-only service identity (telemetry ingest, dashboards).")
@click.option("--server", "server", metavar="NAME", help="The broker's server certificate (needs --host).")
@click.option("--host", "hosts", multiple=True, help="Server certificate: a DNS name or IP clients connect to.")
@click.option("--valid-days", type=float, default=365.0, show_default=True, help="Certificate lifetime.")
@JSON_OUT
def cert_issue(
    directory: Path,
    device: str | None,
    registry: str | None,
    observer: str | None,
    server: str | None,
    hosts: tuple[str, ...],
    valid_days: float,
    as_json: bool,
) -> None:
    """Issue a certificate and its key (0600) for exactly one of --device, --registry, --observer, --server.

    Re-issuing an identity leaves its older certificates valid until they expire: revoke them if the old
    key may be compromised."""
    from cloud_registry.security.certs import CertKind
    from cloud_registry.security.pki import Pki

    candidates: list[tuple[CertKind, str | None]] = [
        ("device", device),
        ("registry", registry),
        ("observer", observer),
        ("server", server),
    ]
    chosen = [(kind, name) for kind, name in candidates if name is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --device ID, --registry [NAME], --observer NAME, --server NAME")
    kind, name = chosen[0]
    if kind == "server" and not hosts:
        raise click.UsageError("--server needs at least one --host (the names/addresses clients connect to)")
    if kind != "server" and hosts:
        raise click.UsageError("--host only applies to --server")
    issued = Pki.open(directory).issue(kind, name, hosts=list(hosts), valid_days=valid_days)
    if as_json:
        click.echo(json.dumps(issued.as_dict(), indent=2))
        return
    click.echo(f"{kind} {name}: serial {issued.serial}")
    click.echo(f"  certificate  {issued.cert}")
    click.echo(f"  key          {issued.key}  (copy to that host only)")
    click.echo(f"  CA           {issued.ca}")


@cert.command("revoke")
@PKI_DIR
@click.argument("name")
@click.option("--kind", type=click.Choice(["device", "registry", "observer", "server"]), help="Only this kind.")
@click.option("--crl-days", type=float, default=90.0, show_default=True, help="Validity of the new CRL.")
def cert_revoke(directory: Path, name: str, kind: str | None, crl_days: float) -> None:
    """Revoke every certificate of NAME and rewrite crl.pem. Then copy the CRL to the broker and reload it
    (SIGHUP); also remove NAME from the broker spec so its open connection loses all rights."""
    from cloud_registry.security.pki import Pki

    done = Pki.open(directory).revoke(name, kind, crl_valid_days=crl_days)  # type: ignore[arg-type]
    click.echo(f"revoked {len(done)} certificate(s) of {name}: {', '.join(r.serial for r in done)}")
    click.echo(f"new CRL: {Path(directory) / 'crl.pem'}; install it and reload the broker")


@cert.command("crl")
@PKI_DIR
@click.option("--valid-days", type=float, default=90.0, show_default=True, help="Validity of the new CRL.")
def cert_crl(directory: Path, valid_days: float) -> None:
    """Re-issue the CRL. Mosquitto refuses every client once the CRL's next-update time has passed:
    run this (e.g. monthly from cron) well before then."""
    from cloud_registry.security.pki import Pki

    path = Pki.open(directory).write_crl(valid_days)
    click.echo(f"CRL written: {path} (valid {valid_days:g} days)")


@cert.command("list")
@PKI_DIR
@JSON_OUT
def cert_list(directory: Path, as_json: bool) -> None:
    """List every certificate the CA issued, with expiry and revocation."""
    from cloud_registry.security.pki import Pki

    records = Pki.open(directory).records()
    if as_json:
        click.echo(json.dumps([r.model_dump() for r in records], indent=2))
        return
    for r in records:
        state = f"revoked {r.revoked_at}" if r.revoked_at else "valid"
        click.echo(f"{r.kind:9} {r.name:24} serial {r.serial:40} until {r.not_after}  {state}")


# --- passwd ----------------------------------------------------------------------------------------

PW_FILE = click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Mosquitto password file (created 0600 if missing).",
)


@broker.group()
def passwd() -> None:
    """Manage a Mosquitto password file (PBKDF2-SHA512 '$7$' hashes, as mosquitto_passwd writes)."""


@passwd.command("set")
@PW_FILE
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin instead of generating one.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the generated password here (0600)."
)
@click.option(
    "--iterations",
    type=int,
    default=None,
    help="PBKDF2 iterations (default: 101 for a generated password, 20000 for one read from stdin; the broker "
    "pays them at every connect).",
)
def passwd_set(path: Path, username: str, password_stdin: bool, out: Path | None, iterations: int | None) -> None:
    """Set USERNAME's password. Without --password-stdin a 256-bit random password is generated and printed
    once (or written to --out). Reload the broker afterwards."""
    from cloud_registry.security.passwords import (
        HUMAN_ITERATIONS,
        RANDOM_ITERATIONS,
        PasswordFile,
        generate_password,
    )
    from edgeline.core.fsutil import write_atomic

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.ClickException("empty password on stdin")
    else:
        password = generate_password()
    default = HUMAN_ITERATIONS if password_stdin else RANDOM_ITERATIONS
    PasswordFile(path).set(username, password, iterations=iterations or default)
    if not password_stdin:
        if out is not None:
            write_atomic(out, (password + "\n").encode(), mode=0o600)
            click.echo(f"password for {username} written to {out}")
        else:
            click.echo(password)
    click.echo(f"{username} set in {path}; reload the broker", err=True)


@passwd.command("delete")
@PW_FILE
@click.argument("username")
def passwd_delete(path: Path, username: str) -> None:
    """Remove USERNAME. After a broker reload its open connection is closed and it cannot reconnect."""
    from cloud_registry.security.passwords import PasswordFile

    removed = PasswordFile(path).delete(username)
    if not removed:
        raise click.ClickException(f"{username} is not in {path}")
    click.echo(f"{username} removed from {path}; reload the broker")


@passwd.command("list")
@PW_FILE
def passwd_list(path: Path) -> None:
    """List the usernames in the file."""
    from cloud_registry.security.passwords import PasswordFile

    names = PasswordFile(path).usernames()
    for name in names:
        click.echo(name)


# --- config ----------------------------------------------------------------------------------------


@broker.group()
def config() -> None:
    """Render the production Mosquitto configuration (mosquitto.conf + ACL) from a broker spec."""


@config.command("example")
def config_example() -> None:
    """Print a commented example broker spec (TOML) to start from."""
    text = resources.files("firmware_configs").joinpath("deploy", "broker-spec.example.toml").read_text("utf-8")
    click.echo(text, nl=False)


@config.command("render")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Write mosquitto.conf and acl here.")
@click.option("--security-only", is_flag=True, help="Only the listener/TLS/auth part (to include in a config).")
@click.option("--check-files", is_flag=True, help="Also check that the TLS/password files named exist.")
@JSON_OUT
def config_render(spec_path: Path, out: Path | None, security_only: bool, check_files: bool, as_json: bool) -> None:
    """Render SPEC (TOML or JSON) into a locked-down mosquitto.conf and its ACL. Without --out, print both."""
    from cloud_registry.security.broker_config import (
        acl_rules,
        load_spec,
        render_acl,
        render_mosquitto_conf,
        render_security,
        write_broker_files,
    )

    spec = load_spec(spec_path)
    if check_files:
        named = [spec.tls.cafile, spec.tls.certfile, spec.tls.keyfile, spec.tls.crlfile, spec.password_file]
        missing = [p for p in named if p is not None and not Path(p).is_file()]
        if missing:
            raise click.ClickException(f"files named in the spec do not exist: {', '.join(missing)}")
    summary: dict[str, Any] = {
        "auth": spec.auth,
        "listener": f"{spec.bind}:{spec.port}",
        "identities": len(acl_rules(spec)),
        "devices": len(spec.devices),
    }
    if out is not None:
        files = write_broker_files(spec, out, full=not security_only)
        summary["files"] = {k: str(v) for k, v in files.items()}
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            click.echo(f"wrote {files['mosquitto.conf']} and {files['acl']} ({summary['identities']} identities)")
            click.echo(f"install the ACL at {spec.acl_file}, then reload the broker")
        return
    if as_json:
        summary["mosquitto.conf"] = render_security(spec) if security_only else render_mosquitto_conf(spec)
        summary["acl"] = render_acl(spec)
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo("# ===== mosquitto.conf =====")
    click.echo(render_security(spec) if security_only else render_mosquitto_conf(spec))
    click.echo(f"# ===== {spec.acl_file} =====")
    click.echo(render_acl(spec))


def _add_check() -> None:
    from edgeline.cli.broker_check import check

    broker.add_command(check)


_add_check()
