"""Map a signed desired-state envelope to a manifest, or to :class:`UpdateRejected` with a
machine-readable reason. The trust checks run in the order that gives the most precise reason."""

from __future__ import annotations

from edge_agent.errors import ManifestError, SignatureError, UpdateRejected
from edge_agent.protocol.delivery import Reason
from edge_agent.protocol.manifest import Manifest, parse_manifest
from edge_agent.protocol.signing import Envelope, TrustStore


def verify_offer(envelope: Envelope, trust: TrustStore, now: float) -> Manifest:
    cert = envelope.certificate
    if cert.root_key_id not in trust.roots:
        raise UpdateRejected(
            Reason.UNKNOWN_KEY, f"signing key {cert.key_id} is certified by unknown root {cert.root_key_id}"
        )
    if cert.key_id in trust.revoked or envelope.signature.key_id in trust.revoked:
        raise UpdateRejected(Reason.REVOKED_KEY, f"signing key {cert.key_id} is revoked")
    if now > cert.expires_at:
        raise UpdateRejected(Reason.KEY_EXPIRED, f"signing key {cert.key_id} expired")
    try:
        body = trust.verify(envelope, now=now)
    except SignatureError as exc:
        raise UpdateRejected(Reason.BAD_SIGNATURE, str(exc)) from exc
    try:
        return parse_manifest(body)
    except ManifestError as exc:
        raise UpdateRejected(Reason.BAD_MANIFEST, str(exc)) from exc
