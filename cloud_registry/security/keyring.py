"""Signing-key life cycle on the registry side: backup root, rotation with history, revocation, and the
retained revocation message devices subscribe to.

Key directory (``edgeline keys init``; see :class:`edgeline.core.protocol.signing.KeyPaths`)::

    root.key              offline root key (certifies signing keys, signs revocation lists)
    root-backup.key       optional second root, also in trust.json; move it to a separate safe at once
    signing.key           current signing key + signing.cert.json (its root certificate)
    retired/<id>.cert.json  certificates of earlier signing keys (their private keys are deleted)
    revocations.json      the newest root-signed revocation list (cumulative)
    trust.json            what devices install: root public keys (+ revocations known at provisioning)
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from cloud_registry.security.errors import SecurityError
from converters.keys import KeyPaths, RootKey, load_private, load_signing_key, rotate_signing_key, save_private
from edgeline.core.errors import EdgelineError, TransportError
from edgeline.core.fsutil import write_atomic
from edgeline.core.mqtt_link import MqttLink
from edgeline.core.protocol.signing import KeyCertificate, RevocationList, TrustStore
from edgeline.core.protocol.topics import Topics

_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
BACKUP_ROOT = "root-backup.key"


def backup_root_path(paths: KeyPaths) -> Path:
    return paths.directory / BACKUP_ROOT


def retired_dir(paths: KeyPaths) -> Path:
    return paths.directory / "retired"


def add_backup_root(paths: KeyPaths) -> str:
    """Create a second root key and add it to trust.json. Do it BEFORE devices are provisioned: devices
    learn roots only from the trust.json they are installed with. Returns the backup root's key id."""
    target = backup_root_path(paths)
    if target.exists():
        raise SecurityError(f"{target} exists already")
    try:
        store = TrustStore.load(paths.trust)
    except EdgelineError as exc:
        raise SecurityError(str(exc)) from exc
    backup = RootKey(Ed25519PrivateKey.generate())
    save_private(target, backup.private)
    store.roots[backup.key_id] = backup.private.public_key()
    store.save(paths.trust)
    return backup.key_id


def rotate(paths: KeyPaths, *, valid_days: float = 365.0, root_key: Path | None = None) -> tuple[str, KeyCertificate]:
    """New signing key certified by the root (or ``root_key``); the old certificate moves to ``retired/``
    and the old private key is overwritten. Returns (old key id, new certificate)."""
    try:
        old = load_signing_key(paths.directory).certificate
    except EdgelineError as exc:
        raise SecurityError(str(exc)) from exc
    if root_key is not None:
        _check_trusted_root(paths, Path(root_key))
    write_atomic(retired_dir(paths) / f"{old.key_id}.cert.json", json.dumps(old.model_dump(), indent=2).encode())
    try:
        cert = rotate_signing_key(paths, valid_days=valid_days, root_key=root_key)
    except EdgelineError as exc:
        raise SecurityError(str(exc)) from exc
    return old.key_id, cert


def _check_trusted_root(paths: KeyPaths, root_key: Path) -> RootKey:
    try:
        root = RootKey(load_private(root_key))
        store = TrustStore.load(paths.trust)
    except EdgelineError as exc:
        raise SecurityError(str(exc)) from exc
    if root.key_id not in store.roots:
        raise SecurityError(f"root key {root_key} ({root.key_id}) is not in {paths.trust}: devices would refuse it")
    return root


def current_revocations(paths: KeyPaths) -> RevocationList | None:
    if not paths.revocations.exists():
        return None
    try:
        return RevocationList.model_validate_json(paths.revocations.read_bytes())
    except ValidationError as exc:
        raise SecurityError(f"{paths.revocations} is malformed: {exc.error_count()} error(s)") from exc


def revoke(
    paths: KeyPaths,
    key_ids: list[str],
    *,
    root_key: Path | None = None,
    allow_current: bool = False,
    now: float | None = None,
) -> RevocationList:
    """Add signing keys to the cumulative, root-signed revocation list and to trust.json.

    The serial is ``max(previous + 1, unix time)``: monotonic here, and still above what devices have
    seen if ``revocations.json`` is ever lost. Revoking the current signing key is refused unless
    ``allow_current`` (rotate first, or nothing new can be signed that devices accept)."""
    for kid in key_ids:
        if not _KEY_ID.match(kid):
            raise SecurityError(f"{kid!r} is not a signing key id (16 lowercase hex digits, see 'edgeline keys show')")
    root = _check_trusted_root(paths, Path(root_key) if root_key is not None else paths.root_key)
    try:
        current = load_signing_key(paths.directory).key_id
    except EdgelineError:
        current = None
    if current in key_ids and not allow_current:
        raise SecurityError(
            f"{current} is the current signing key: rotate first ('edgeline keys rotate'), then revoke it"
        )
    previous = current_revocations(paths)
    t = time.time() if now is None else now
    serial = max(int(t), previous.serial + 1 if previous else 0)
    lst = root.revoke(sorted(set(key_ids) | set(previous.revoked if previous else [])), serial, now=t)
    write_atomic(paths.revocations, json.dumps(lst.model_dump(), indent=2).encode())
    store = TrustStore.load(paths.trust)
    store.apply_revocations(lst)
    store.save(paths.trust)
    return lst


def status(paths: KeyPaths) -> dict[str, Any]:
    """What ``edgeline keys show`` prints."""
    try:
        signing = load_signing_key(paths.directory).certificate
        store = TrustStore.load(paths.trust)
    except EdgelineError as exc:
        raise SecurityError(str(exc)) from exc
    retired = []
    rdir = retired_dir(paths)
    for f in sorted(rdir.glob("*.cert.json")) if rdir.exists() else []:
        try:
            cert = KeyCertificate.model_validate_json(f.read_bytes())
        except ValidationError as exc:
            raise SecurityError(f"{f} is malformed") from exc
        retired.append({"key_id": cert.key_id, "expires_at": cert.expires_at, "revoked": cert.key_id in store.revoked})
    rl = current_revocations(paths)
    return {
        "signing_key": signing.key_id,
        "certified_by": signing.root_key_id,
        "expires_at": signing.expires_at,
        "roots": sorted(store.roots),
        "backup_root_here": backup_root_path(paths).exists(),
        "retired": retired,
        "revoked": sorted(store.revoked),
        "revocation_serial": rl.serial if rl else None,
    }


def publish_revocations(link: MqttLink, topics: Topics, lst: RevocationList, timeout: float = 10.0) -> None:
    """Publish the revocation list, retained at QoS 1, on the fleet's revocations topic. Devices subscribe
    to it, verify it against their roots and apply it (an older serial is ignored). Only a registry
    identity may write that topic; a refusal raises :class:`SecurityError`."""
    payload = json.dumps(lst.model_dump(), separators=(",", ":")).encode()
    try:
        link.publish_sync(topics.trust_revocations(), payload, qos=1, retain=True, timeout=timeout)
    except TransportError as exc:
        raise SecurityError(f"could not publish the revocation list: {exc}") from exc
