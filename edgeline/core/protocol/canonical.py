"""Canonical JSON: the byte form that is hashed and signed.

Keys sorted, no insignificant whitespace, UTF-8, no NaN/Infinity. Two processes that hold equal
JSON values produce equal bytes, so a signature made in the cloud verifies on the device.
"""

from __future__ import annotations

import json
from typing import Any

from edgeline.core.errors import ProtocolError

#: Default ceiling for any JSON document read from the network (manifests carry self-test images).
MAX_JSON_BYTES = 4 * 1024 * 1024


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` to canonical JSON bytes. Raises :class:`ProtocolError` on NaN or non-JSON types."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"value cannot be encoded as canonical JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def parse_json(payload: bytes | str, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON from the wire with a size cap; every failure is a :class:`ProtocolError`."""
    size = len(payload)
    if size > max_bytes:
        raise ProtocolError(f"payload of {size} bytes exceeds the limit of {max_bytes} bytes")
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
        return json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"payload is not valid JSON: {exc}") from exc
