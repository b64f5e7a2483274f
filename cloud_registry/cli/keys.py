"""``edgeline keys``: the root key, signing keys, rotation and revocation."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_agent.errors import EdgeAgentError
from edge_agent.fsutil import write_atomic
from edge_agent.protocol.signing import (
    KeyPaths,
    RevocationList,
    RootKey,
    TrustStore,
    init_keys,
    load_private,
    load_signing_key,
    rotate_signing_key,
)

KEYS_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("keys"),
    show_default=True,
    help="Key directory.",
)


@click.group()
def keys() -> None:
    """Ed25519 keys: a root key certifies signing keys; devices trust only the root (trust.json)."""


@keys.command("init")
@KEYS_DIR
@click.option("--force", is_flag=True, help="Replace an existing key set (devices must get the new trust.json).")
@click.option("--valid-days", type=float, default=365.0, show_default=True, help="Signing key lifetime.")
def init(directory: Path, force: bool, valid_days: float) -> None:
    """Create root.key, signing.key + signing.cert.json, and trust.json for devices."""
    try:
        paths = init_keys(directory, force=force, valid_days=valid_days)
    except EdgeAgentError as exc:
        raise click.ClickException(str(exc)) from exc
    cert = load_signing_key(directory).certificate
    click.echo(f"root key     {paths.root_key}  (keep it offline)")
    click.echo(f"signing key  {paths.signing_key}  id {cert.key_id}")
    click.echo(f"trust store  {paths.trust}  (install on devices)")


@keys.command("rotate")
@KEYS_DIR
@click.option("--valid-days", type=float, default=365.0, show_default=True)
def rotate(directory: Path, valid_days: float) -> None:
    """Make a new signing key certified by the root. Devices accept it with no change."""
    try:
        old = load_signing_key(directory).key_id
        cert = rotate_signing_key(KeyPaths(directory), valid_days=valid_days)
    except EdgeAgentError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"rotated signing key {old} -> {cert.key_id}")
    click.echo(f"revoke the old one with: edgeline keys revoke {old}")


@keys.command("revoke")
@KEYS_DIR
@click.argument("key_ids", nargs=-1, required=True)
def revoke(directory: Path, key_ids: tuple[str, ...]) -> None:
    """Revoke signing keys: writes a root-signed revocations.json, published to devices by the registry."""
    paths = KeyPaths(directory)
    try:
        root = RootKey(load_private(paths.root_key))
        previous: list[str] = []
        serial = 0
        if paths.revocations.exists():
            old = RevocationList.model_validate_json(paths.revocations.read_bytes())
            previous, serial = list(old.revoked), old.serial + 1
        rl = root.revoke(previous + list(key_ids), serial)
        write_atomic(paths.revocations, json.dumps(rl.model_dump(), indent=2).encode())
        store = TrustStore.load(paths.trust)
        store.apply_revocations(rl)
        store.save(paths.trust)
    except (EdgeAgentError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {', '.join(key_ids)} (revocation list serial {rl.serial})")


@keys.command("show")
@KEYS_DIR
def show(directory: Path) -> None:
    """Show the key ids and validity."""
    try:
        cert = load_signing_key(directory).certificate
        store = TrustStore.load(KeyPaths(directory).trust)
    except EdgeAgentError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        json.dumps(
            {
                "signing_key": cert.key_id,
                "expires_at": cert.expires_at,
                "roots": sorted(store.roots),
                "revoked": sorted(store.revoked),
            },
            indent=2,
        )
    )
