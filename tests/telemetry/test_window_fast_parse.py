"""parse_window's one-pass JSON validation accepts exactly what the stdlib path accepts, with the
same window, and leaves every refusal (and its message) to the stdlib path."""

from __future__ import annotations

import json
import random

import pytest

from edge_agent.errors import ProtocolError
from edgeline.core.protocol.canonical import parse_json
from edgeline.core.protocol.telemetry import TelemetryWindow, _validated, parse_window
from tests.telemetry.test_window_schema import body


def stdlib_path(raw: bytes) -> TelemetryWindow:
    return _validated(TelemetryWindow, parse_json(raw, max_bytes=16 * 1024), "telemetry window", "telemetry", "window")


def outcome(fn: object, raw: bytes) -> tuple[str, object]:
    try:
        return "ok", fn(raw)  # type: ignore[operator]
    except ProtocolError as exc:
        return "refused", str(exc).split(":", 1)[0]


def mutations(raw: bytes, rng: random.Random, n: int) -> list[bytes]:
    """Truncations, flipped and inserted bytes, spliced hostile tokens."""
    tokens = [
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"1e400",
        b"9" * 30,
        b"true",
        b"null",
        b'"x"',
        b"\\ud800",
        b"\xff",
        b"\xed\xa0\x80",
        b"{}",
        b"[]",
        b",",
        b'"extra":1,',
        b"-0",
        b"1.0",
        b'"60"',
        b"\x00",
        b" ",
    ]
    out = []
    for _ in range(n):
        i = rng.randrange(len(raw))
        kind = rng.randrange(4)
        if kind == 0:
            out.append(raw[:i])
        elif kind == 1:
            out.append(raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :])
        elif kind == 2:
            out.append(raw[:i] + rng.choice(tokens) + raw[i:])
        else:  # replace a value after a colon
            j = raw.find(b":", i)
            k = min((x for x in (raw.find(b",", j), raw.find(b"}", j)) if x > j), default=-1) if j > 0 else -1
            out.append(raw[: j + 1] + rng.choice(tokens) + raw[k:] if k > 0 else raw[:i])
    return out


def test_same_outcome_as_the_stdlib_path_on_hostile_mutations() -> None:
    rng = random.Random(7)
    raw = json.dumps(body(), separators=(",", ":")).encode()
    seen = {"ok": 0, "refused": 0}
    for m in [raw, *mutations(raw, rng, 3000)]:
        fast, slow = outcome(parse_window, m), outcome(stdlib_path, m)
        assert fast == slow, m
        seen[fast[0]] += 1
    assert seen["ok"] > 50 and seen["refused"] > 1000  # both sides of the comparison were exercised


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(body(start=float("nan"))).encode(),  # NaN spelled as the stdlib writes it
        json.dumps(body()).encode().replace(b'"end": 1060.0', b'"end": Infinity'),
        json.dumps(body(group="NaN-hall")).encode(),  # the constant's name inside a string: accepted
    ],
)
def test_constants_take_the_stdlib_path(raw: bytes) -> None:
    assert outcome(parse_window, raw) == outcome(stdlib_path, raw)


def test_nan_is_refused_as_not_json() -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_window(json.dumps(body(start=float("nan"))).encode())


def test_lax_values_give_the_same_window() -> None:
    """Values the schema coerces (a count as "60" or 60.0): the same window either way."""
    raw = json.dumps(body(frames="120", errors=0.0, merged=True)).encode()
    assert parse_window(raw) == stdlib_path(raw)
    assert parse_window(raw).frames == 120
