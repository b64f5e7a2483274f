"""Map a signed desired-state envelope to a manifest, or to :class:`UpdateRejected` with a
machine-readable reason. The trust checks run in the order that gives the most precise reason."""

from __future__ import annotations

from edge_agent.errors import ManifestError, SignatureError, UpdateRejected
from edgeline.core.protocol.delivery import Reason
from edgeline.core.protocol.manifest import Manifest, parse_manifest
from edgeline.core.protocol.signing import Envelope, TrustStore


def verify_offer(envelope: Envelope, trust: TrustStore, now: float, *, check_expiry: bool = True) -> Manifest:
    """``check_expiry=False`` leaves the signing key's expiry to :func:`check_key_expiry` (the triage
    first lets a retained copy of the deployment already installed through, unchanged)."""
    cert = envelope.certificate
    if cert.root_key_id not in trust.roots:
        raise UpdateRejected(
            Reason.UNKNOWN_KEY, f"signing key {cert.key_id} is certified by unknown root {cert.root_key_id}"
        )
    if cert.key_id in trust.revoked or envelope.signature.key_id in trust.revoked:
        raise UpdateRejected(Reason.REVOKED_KEY, f"signing key {cert.key_id} is revoked")
    if check_expiry:
        check_key_expiry(envelope, now)
    try:
        body = trust.verify(envelope, now=now, check_expiry=check_expiry)
    except SignatureError as exc:
        raise UpdateRejected(Reason.BAD_SIGNATURE, str(exc)) from exc
    try:
        return parse_manifest(body)
    except ManifestError as exc:
        raise UpdateRejected(Reason.BAD_MANIFEST, str(exc)) from exc


def check_key_expiry(envelope: Envelope, now: float) -> None:
    """A deployment is accepted only while its signing key's certificate is valid."""
    cert = envelope.certificate
    if now > cert.expires_at:
        raise UpdateRejected(Reason.KEY_EXPIRED, f"signing key {cert.key_id} expired")
