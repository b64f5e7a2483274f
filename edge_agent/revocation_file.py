"""The newest revocation list a device's updater accepted from the fleet, kept in its state dir and
laid over the configured trust store at start. Light on purpose: the station supervisor reads it too,
without the updater's modules (they bring the inspection runtime)."""

from __future__ import annotations

import logging
from pathlib import Path

from edge_agent.errors import EdgelineError
from edgeline.core.protocol.canonical import parse_json
from edgeline.core.protocol.signing import TrustStore

log = logging.getLogger(__name__)

#: its name in a state dir
REVOCATIONS_FILE = "revocations.json"


def apply_revocation_file(trust: TrustStore, path: Path) -> None:
    """Apply the revocation list at ``path`` to ``trust``; a missing file is none, an unreadable one is
    logged and ignored (the configured trust store stays as it is)."""
    if not path.exists():
        return
    try:
        data = parse_json(path.read_bytes(), max_bytes=1024 * 1024)
        if isinstance(data, dict):
            trust.apply_revocations(data)
    except (EdgelineError, OSError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
