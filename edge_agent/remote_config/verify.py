"""Verify a signed config document against the device's trust store, in the order of the updater's
checks (:mod:`edge_agent.updater.checks`) so the most precise reason is given: unknown root, revoked
key, expired key, signature, document shape, expiry, target. The version floor (replay) is
:func:`check_version`'s."""

from __future__ import annotations

from edge_agent.errors import ProtocolError, SignatureError
from edge_agent.identity import DeviceIdentity
from edge_agent.remote_config.errors import ConfigRefused
from edgeline.core.protocol.remote_config import ConfigDocument, ConfigReason, parse_config_document
from edgeline.core.protocol.signing import Envelope, TrustStore


def verify_document(
    env: Envelope, trust: TrustStore, me: DeviceIdentity, now: float, *, check_expiry: bool = True
) -> ConfigDocument:
    """The document of ``env`` when it may be applied on this device, else :class:`ConfigRefused`.
    ``check_expiry=False`` is for a document read back from the device's own disk (accepted earlier)."""
    version = env.body.get("version", 0)
    version = version if isinstance(version, int) and not isinstance(version, bool) else 0
    cert = env.certificate
    if cert.root_key_id not in trust.roots:
        raise ConfigRefused(
            ConfigReason.UNKNOWN_KEY,
            f"signing key {cert.key_id} is certified by unknown root {cert.root_key_id}",
            version,
        )
    if cert.key_id in trust.revoked or env.signature.key_id in trust.revoked:
        raise ConfigRefused(ConfigReason.REVOKED_KEY, f"signing key {cert.key_id} is revoked", version)
    if check_expiry and now > cert.expires_at:
        raise ConfigRefused(ConfigReason.KEY_EXPIRED, f"signing key {cert.key_id} expired", version)
    try:
        body = trust.verify(env, now=now, check_expiry=check_expiry)
    except SignatureError as exc:
        raise ConfigRefused(ConfigReason.BAD_SIGNATURE, str(exc), version) from exc
    try:
        doc = parse_config_document(body)
    except ProtocolError as exc:
        raise ConfigRefused(ConfigReason.BAD_DOCUMENT, str(exc), version) from exc
    if check_expiry and doc.is_expired(now):
        raise ConfigRefused(ConfigReason.EXPIRED, f"config version {doc.version} expired", doc.version)
    if not doc.target.matches(me.device_id, frozenset(me.groups), me.hardware_class):
        raise ConfigRefused(
            ConfigReason.WRONG_TARGET, f"config version {doc.version} is not for this device", doc.version
        )
    return doc


def check_version(doc: ConfigDocument, floor: int) -> None:
    """Refuse a version at or below the newest this device accepted (a replay, or a downgrade)."""
    if doc.version <= floor:
        raise ConfigRefused(
            ConfigReason.REPLAY,
            f"config version {doc.version} is not above version {floor}, already accepted",
            doc.version,
        )
