"""``edgeline keys``: the root key, signing keys, rotation, revocation and publishing revocations."""

from __future__ import annotations

import json
from pathlib import Path

import click

from converters.keys import KeyPaths, init_keys, load_signing_key
from edgeline.cli.options import BrokerOptions, broker_options, connect, keys_option

KEYS_DIR = keys_option(param="directory", legacy_dir=True)
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

    paths = init_keys(directory, force=force, valid_days=valid_days)
    if force:
        keyring.backup_root_path(paths).unlink(missing_ok=True)
    backup = keyring.add_backup_root(paths) if backup_root else None
    cert = load_signing_key(directory).certificate
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

    old, cert = keyring.rotate(KeyPaths(directory), valid_days=valid_days, root_key=root_key)
    click.echo(f"rotated signing key {old} -> {cert.key_id} (certified by root {cert.root_key_id})")
    click.echo(f"revoke the old one with: edgeline keys revoke --keys {directory} {old}")


@keys.command("revoke")
@KEYS_DIR
@ROOT_KEY
@click.option("--force", is_flag=True, help="Allow revoking the current signing key (nothing new will verify).")
@click.argument("key_ids", nargs=-1, required=True)
def revoke(directory: Path, root_key: Path | None, force: bool, key_ids: tuple[str, ...]) -> None:
    """Revoke signing keys: updates the root-signed, cumulative revocations.json (and trust.json).

    Devices learn of it when it is published: 'edgeline keys publish-revocations'."""
    from cloud_registry.security import keyring

    rl = keyring.revoke(KeyPaths(directory), list(key_ids), root_key=root_key, allow_current=force)
    click.echo(f"revoked {', '.join(key_ids)} (revocation list serial {rl.serial}, {len(rl.revoked)} key(s) in all)")
    click.echo(f"publish it with: edgeline keys publish-revocations --keys {directory} --host ... ")


@keys.command("show")
@KEYS_DIR
def show(directory: Path) -> None:
    """Show the current signing key, the trusted roots, retired and revoked keys (JSON)."""
    from cloud_registry.security import keyring

    info = keyring.status(KeyPaths(directory))
    click.echo(json.dumps(info, indent=2))


@keys.command("publish-revocations")
@KEYS_DIR
@broker_options(default_port=8883)
def publish_revocations_cmd(directory: Path, broker: BrokerOptions) -> None:
    """Publish KEYS/revocations.json, retained, on the fleet's revocations topic (as a registry identity:
    a client certificate or a user name and password; TLS with --ca-file is required)."""
    from cloud_registry.security import keyring

    if broker.ca_file is None:
        raise click.UsageError("publishing revocations needs TLS: --ca-file")
    if (broker.cert_file is None) != (broker.key_file is None):
        raise click.UsageError("--cert-file and --key-file go together")
    lst = keyring.current_revocations(KeyPaths(directory))
    if lst is None:
        raise click.ClickException(f"no revocations.json in {directory}: nothing to publish")
    link = connect(broker, broker.username or "")
    try:
        keyring.publish_revocations(link, broker.topics, lst)
    finally:
        link.stop()
    click.echo(
        f"published revocation list serial {lst.serial} ({len(lst.revoked)} key(s)) to "
        f"{broker.topics.trust_revocations()}"
    )
