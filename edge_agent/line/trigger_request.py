"""A trigger asked for in JSON (the local API's ``POST /trigger``, the local MQTT trigger topic), checked
before it reaches the station. Pure: bytes in, a :class:`TriggerRequest` or a :class:`TriggerRequestError`
with the reason out.

    {"part_id": "A-1042", "ts": 1764750000.123, "wait_ms": 500}   every field optional

``part_id``: up to 64 printable ASCII characters without spaces (the TCP line's and the Modbus text
registers' alphabet; empty: one is assigned); ``ts``: the trigger's own wall-clock time in Unix seconds
(the station then takes the buffered frame closest to it); ``wait_ms``: how long the caller waits for
the result (the local API only; 0 = answer at once with the trigger id)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from edge_agent.errors import EdgeAgentError

MAX_PART_ID = 64
MAX_WAIT_MS = 10_000
_PART_ID = re.compile(r"[\x21-\x7e]{0,64}")
_FIELDS = frozenset({"part_id", "ts", "wait_ms"})


class TriggerRequestError(EdgeAgentError):
    """A trigger request the station refuses (bad JSON, an unknown field, a bad value)."""

    default_reason = "bad_trigger"


@dataclass(frozen=True)
class TriggerRequest:
    part_id: str = ""
    ts: float | None = None
    wait_ms: float = 0.0


def parse_trigger(body: bytes, *, allow_wait: bool = True) -> TriggerRequest:
    if not body.strip():
        return TriggerRequest()
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TriggerRequestError(f"the trigger is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise TriggerRequestError("the trigger must be a JSON object")
    fields = _FIELDS if allow_wait else _FIELDS - {"wait_ms"}
    unknown = sorted(set(doc) - fields)
    if unknown:
        raise TriggerRequestError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; a trigger has {', '.join(sorted(fields))}"
        )
    part = doc.get("part_id", "")
    if part is None:
        part = ""
    if not isinstance(part, str) or not _PART_ID.fullmatch(part):
        raise TriggerRequestError(
            f"part_id must be up to {MAX_PART_ID} printable ASCII characters without spaces, got {str(part)[:80]!r}"
        )
    ts = doc.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0):
        raise TriggerRequestError(f"ts must be a finite Unix time in seconds, got {ts!r}")
    wait = doc.get("wait_ms", 0)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_WAIT_MS:
        raise TriggerRequestError(f"wait_ms must be a number from 0 to {MAX_WAIT_MS}, got {wait!r}")
    return TriggerRequest(part, None if ts is None else float(ts), float(wait))
