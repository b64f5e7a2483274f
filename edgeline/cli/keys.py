"""``edgeline keys``: the root key, signing keys, rotation, revocation and publishing revocations."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cloud_registry.errors import RegistryError
from converters.keys import KeyPaths, init_keys, load_signing_key
from edge_agent.errors import EdgelineError

KEYS_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("keys"),
    show_default=True,
    help="Key directory.",
)
ROOT_KEY = click.option(
    "--root-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Sign with this root key instead of DIR/root.key (e.g. the backup root after losing the root).",
)


@click.group()
def keys() -> None:
    """Ed25519 keys: a root key certifies signing keys; devices trust only the roots (trust.json).

    Rotation needs no device change; revocation is a root-signed list published to devices.
    See docs/security.md for the recovery procedures (leaked or lost signing key, lost root key)."""


@keys.command("init")
@KEYS_DIR
@click.option("--force", is_flag=True, help="Replace an existing key set (devices must get the new trust.json).")
@click.option("--valid-days", type=float, default=365.0, show_default=True, help="Signing key lifetime.")
@click.option(
    "--backup-root",
    is_flag=True,
    help="Also create root-backup.key, trusted by devices too. Move it to a separate safe: it is how you "
    "recover from a lost root key without touching devices.",
)
def init(directory: Path, force: bool, valid_days: float, backup_root: bool) -> None:
    """Create root.key, signing.key + signing.cert.json, and trust.json for devices."""
    from cloud_registry.security import keyring

    try:
        paths = init_keys(directory, force=force, valid_days=valid_days)
        if force:
            keyring.backup_root_path(paths).unlink(missing_ok=True)
        backup = keyring.add_backup_root(paths) if backup_root else None
        cert = load_signing_key(directory).certificate
    except (EdgelineError, RegistryError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"root key     {paths.root_key}  (keep it offline)")
    if backup:
        click.echo(f"backup root  {keyring.backup_root_path(paths)}  id {backup}  (move it to a separate safe now)")
    click.echo(f"signing key  {paths.signing_key}  id {cert.key_id}")
    click.echo(f"trust store  {paths.trust}  (install on devices)")


@keys.command("rotate")
@KEYS_DIR
@click.option("--valid-days", type=float, default=365.0, show_default=True, help="New signing key lifetime.")
@ROOT_KEY
def rotate(directory: Path, valid_days: float, root_key: Path | None) -> None:
    """Make a new signing key certified by the root. Devices accept it with no change.

    The old certificate is kept in DIR/retired/; its private key is overwritten."""
    from cloud_registry.security import keyring

    try:
        old, cert = keyring.rotate(KeyPaths(directory), valid_days=valid_days, root_key=root_key)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"rotated signing key {old} -> {cert.key_id} (certified by root {cert.root_key_id})")
    click.echo(f"revoke the old one with: edgeline keys revoke --dir {directory} {old}")


@keys.command("revoke")
@KEYS_DIR
@ROOT_KEY
@click.option("--force", is_flag=True, help="Allow revoking the current signing key (nothing new will verify).")
@click.argument("key_ids", nargs=-1, required=True)
def revoke(directory: Path, root_key: Path | None, force: bool, key_ids: tuple[str, ...]) -> None:
    """Revoke signing keys: updates the root-signed, cumulative revocations.json (and trust.json).

    Devices learn of it when it is published: 'edgeline keys publish-revocations'."""
    from cloud_registry.security import keyring

    try:
        rl = keyring.revoke(KeyPaths(directory), list(key_ids), root_key=root_key, allow_current=force)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {', '.join(key_ids)} (revocation list serial {rl.serial}, {len(rl.revoked)} key(s) in all)")
    click.echo(f"publish it with: edgeline keys publish-revocations --dir {directory} --host ... ")


@keys.command("show")
@KEYS_DIR
def show(directory: Path) -> None:
    """Show the current signing key, the trusted roots, retired and revoked keys (JSON)."""
    from cloud_registry.security import keyring

    try:
        info = keyring.status(KeyPaths(directory))
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(info, indent=2))


@keys.command("publish-revocations")
@KEYS_DIR
@click.option("--host", required=True, help="Fleet broker host.")
@click.option("--port", type=int, default=8883, show_default=True)
@click.option("--ca", "ca_file", type=click.Path(dir_okay=False, exists=True), required=True, help="Broker CA cert.")
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, exists=True), help="Registry client cert (mTLS).")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), help="Registry client key (mTLS).")
@click.option("--username", help="Registry identity (password authentication).")
@click.option(
    "--password-file", type=click.Path(dir_okay=False, exists=True), help="File holding the registry's password."
)
@click.option("--topic-root", default="edgeline", show_default=True)
@click.option("--fleet", default="default", show_default=True)
def publish_revocations_cmd(
    directory: Path,
    host: str,
    port: int,
    ca_file: str,
    cert_file: str | None,
    key_file: str | None,
    username: str | None,
    password_file: str | None,
    topic_root: str,
    fleet: str,
) -> None:
    """Publish DIR/revocations.json, retained, on the fleet's revocations topic (as a registry identity)."""
    from cloud_registry.security import keyring
    from edgeline.core.mqtt_link import LinkSettings, MqttLink, TlsSettings
    from edgeline.core.protocol.topics import Topics

    if (cert_file is None) != (key_file is None):
        raise click.ClickException("--cert and --key go together")
    password = Path(password_file).read_text("utf-8").strip() if password_file else None
    try:
        lst = keyring.current_revocations(KeyPaths(directory))
        if lst is None:
            raise click.ClickException(f"no revocations.json in {directory}: nothing to publish")
        topics = Topics(topic_root, fleet)
        link = MqttLink(
            LinkSettings(
                host=host,
                port=port,
                client_id=username or "",
                username=username,
                password=password,
                tls=TlsSettings(ca_file=ca_file, cert_file=cert_file, key_file=key_file),
                clean_start=True,
            )
        )
        try:
            link.connect(timeout=10.0)
            keyring.publish_revocations(link, topics, lst)
        finally:
            link.stop()
    except (EdgelineError, RegistryError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"published revocation list serial {lst.serial} ({len(lst.revoked)} key(s)) to {topics.trust_revocations()}"
    )
