"""Triage of a desired-state message, pure: parse, verify the signature, check the target and the
sequence. What is left for the plugin is a candidate manifest, a refusal, or nothing to do."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge_agent.errors import ProtocolError, UpdateRejected
from edge_agent.identity import DeviceIdentity
from edge_agent.updater import machine as m
from edge_agent.updater.checks import check_key_expiry, verify_offer
from edge_agent.updater.refusals import payload_key
from edgeline.core.protocol.delivery import Reason, parse_desired
from edgeline.core.protocol.manifest import Manifest
from edgeline.core.protocol.signing import Envelope, TrustStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    #: the sha256 of the whole payload: a retained refusal is reported once, not at every reconnect,
    #: and a different payload (even one carrying the same signature) is a different refusal
    key: str
    sequence: int
    reason: str
    detail: str


@dataclass(frozen=True)
class Candidate:
    envelope: Envelope
    manifest: Manifest


def triage(
    payload: bytes, retained: bool, rec: m.Record, trust: TrustStore, me: DeviceIdentity, now: float
) -> Candidate | Refusal | None:
    """None: nothing to do (cleared desired state, the same deployment again, or a stale retained
    one that a newer deployment already replaced)."""
    try:
        env = parse_desired(payload)
    except ProtocolError as exc:
        return Refusal(payload_key(payload), 0, Reason.BAD_MANIFEST, str(exc))
    if env is None:
        return None
    try:
        manifest = verify_offer(env, trust, now, check_expiry=False)
        if _already_taken(rec, manifest):
            return None  # retained again (e.g. at a restart), even past its signing key's expiry
        check_key_expiry(env, now)
        if manifest.role != "serve":  # a challenger's manifest copied onto the desired topic
            raise UpdateRejected(Reason.WRONG_TARGET, f"a {manifest.role} deployment is not for the serving slots")
        m.check_target(manifest, me)
        if m.check_sequence(rec, manifest) == m.OfferOutcome.IGNORE:
            return None
    except UpdateRejected as r:
        if r.reason == Reason.REPLAY and retained:
            log.debug("ignoring stale retained deployment: %s", r)
            return None
        seq = env.body.get("sequence", 0)
        return Refusal(payload_key(payload), seq if isinstance(seq, int) else 0, r.reason, r.detail)
    return Candidate(env, manifest)


def _already_taken(rec: m.Record, manifest: Manifest) -> bool:
    """The deployment this device already accepted (same sequence, same artifact): nothing to decide."""
    try:
        return m.check_sequence(rec, manifest) == m.OfferOutcome.IGNORE
    except UpdateRejected:
        return False
