"""Fuzz tests of telemetry: the wire window (device side) and the cloud ingest in front of the store,
plus the telemetry state the device keeps in its outbox database across restarts.

* ``parse_window`` raises only ``ProtocolError``; what it accepts re-encodes to a window that parses
  back equal.
* ``Ingestor.handle`` never raises for any topic, payload or retained flag: it stores, deduplicates
  or rejects, and stores only what the strict schema accepts, once per key.
* The restore of pending windows and alarm state raises only the errors the plugin catches (a
  corrupt state row must not keep telemetry from starting).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_registry.telemetry.ingest import Ingestor
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.errors import EdgelineError, ProtocolError
from edge_agent.outbox.store import Outbox
from edge_agent.preprocessing import STAT_BINS
from edge_agent.telemetry.alarm import LocalDriftAlarm
from edge_agent.telemetry.plugin import STATE_ALARM, STATE_PENDING, TelemetryPlugin
from edge_agent.telemetry.privacy import MinFrames
from edgeline.core.protocol.telemetry import (
    CONF_BINS,
    STAT_NAMES,
    DriftStat,
    Latency,
    ModelRef,
    TelemetryWindow,
    parse_window,
)
from edgeline.core.protocol.topics import Topics
from firmware_configs.telemetry_section import TelemetrySection
from tests.fuzz.conftest import fuzz_settings, json_values, mutated, payloads

TOPICS = Topics()
#: what TelemetryPlugin._restore catches around a restore (anything else would stop the plugin)
RESTORE_CAUGHT = (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError)


def window_body(key: str | None = None) -> dict[str, Any]:
    w = TelemetryWindow(
        key=key or uuid.uuid4().hex,
        device="d" * 32,
        group="line-1",
        model=ModelRef(name="tiny", version=2, sha256="ab" * 32),
        start=1000.0,
        end=1060.0,
        frames=120,
        class_counts={"ok": 100, "spot": 20},
        confidence=[0] * (CONF_BINS - 1) + [120],
        input_stats={n: [0] * (STAT_BINS - 1) + [12] for n in STAT_NAMES},
        stats_frames=12,
        latency_ms=Latency(p50=1.0, p95=2.0, p99=3.0, max=4.0),
        errors=1,
        drops=2,
        drift={"confidence": DriftStat(psi=0.01, threshold=0.2, drifted=False)},
    )
    return w.to_body()


@pytest.fixture(scope="module")
def ingestor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingestor]:
    store = TelemetryStore(tmp_path_factory.mktemp("ingest-fuzz") / "telemetry.db")
    yield Ingestor(store, TOPICS)
    store.close()


@fuzz_settings()
@given(st.data())
def test_windows_parse_or_raise_protocol_errors(data: st.DataObject) -> None:
    doc = data.draw(mutated(window_body(), max_mutations=4) | json_values)
    payload = data.draw(st.sampled_from([json.dumps(doc).encode()]) | payloads)
    try:
        w = parse_window(payload)
    except ProtocolError:
        return
    try:
        again = parse_window(w.encode())
    except ProtocolError as exc:  # only a window over the size limit may refuse to encode
        assert "exceeds" in str(exc)
        return
    assert again == w


@fuzz_settings()
@given(
    topic=st.sampled_from([TOPICS.device_telemetry("dev-1"), TOPICS.device_events("dev-1")])
    | st.text(max_size=60)
    | st.builds(lambda s: f"{TOPICS.base}/devices/{s}/telemetry", st.text(max_size=20)),
    data=st.data(),
    retained=st.booleans(),
)
def test_the_ingest_never_raises_and_stores_only_valid_windows_once(
    ingestor: Ingestor, topic: str, data: st.DataObject, retained: bool
) -> None:
    doc = data.draw(mutated(window_body(), max_mutations=3) | st.just(window_body()) | json_values)
    payload = data.draw(st.sampled_from([json.dumps(doc).encode()]) | payloads)
    before = ingestor.store.count()
    outcome = ingestor.handle(topic, payload, retained)
    assert outcome in ("stored", "duplicate") or outcome.startswith("rejected: ")
    if outcome == "stored":
        w = parse_window(payload)
        assert not retained and topic == TOPICS.device_telemetry(TOPICS.device_id_from(topic))
        assert ingestor.store.count() == before + 1
        assert ingestor.handle(topic, payload, retained) == "duplicate"  # redelivery: stored once
        stored_keys = ingestor.store.keys()  # a set from the store, not a dict
        assert w.key in stored_keys
    else:
        assert ingestor.store.count() == before


@fuzz_settings()
@given(json_values)
def test_pending_window_state_restores_or_raises_what_the_plugin_catches(state: Any) -> None:
    with contextlib.suppress(*RESTORE_CAUGHT):
        MinFrames(5).restore(state)


@fuzz_settings()
@given(st.data())
def test_mutated_pending_window_state(data: st.DataObject) -> None:
    from edge_agent.telemetry.windows import RawWindow

    valid = [RawWindow.from_state(_pending_state()).to_state()]
    state = data.draw(mutated(valid, max_mutations=3))
    with contextlib.suppress(*RESTORE_CAUGHT):
        MinFrames(5).restore(state)


@fuzz_settings()
@given(
    st.dictionaries(st.integers(-500, 5000).map(str), st.integers(-(2**70), 2**70), max_size=4),
    st.lists(st.integers(-(2**70), 2**70), max_size=12),
)
def test_pending_window_counts_out_of_range(latency: dict[str, int], confidence: list[int]) -> None:
    """Bins and counts a corrupt row can hold: a latency bin past the end, counts past int64."""
    state = {**_pending_state(), "latency": latency, "confidence": confidence}
    with contextlib.suppress(*RESTORE_CAUGHT):
        MinFrames(5).restore([_pending_state(), state])


def _pending_state() -> dict[str, Any]:
    return {
        "model": ["tiny", 2, "ab" * 32],
        "start": 1000.0,
        "end": 1001.0,
        "frames": 3,
        "merged": 1,
        "class_counts": {"ok": 3},
        "confidence": [0] * 9 + [3],
        "stats": {n: [0] * (STAT_BINS - 1) + [1] for n in STAT_NAMES},
        "stats_frames": 1,
        "latency": {"3": 3},
        "latency_max": 2.5,
        "errors": 0,
        "drops": 0,
    }


@fuzz_settings()
@given(json_values)
def test_alarm_state_restores_or_raises_what_the_plugin_catches(state: Any) -> None:
    alarm = LocalDriftAlarm(lambda kind, payload: None, 3, 4, 3)
    with contextlib.suppress(*RESTORE_CAUGHT):
        alarm.restore(state)


@fuzz_settings()
@given(st.data())
def test_a_corrupt_telemetry_state_row_does_not_keep_the_plugin_from_starting(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """End to end through the outbox database: whatever the stored state rows hold, the plugin
    starts (and keeps what it could read)."""
    outbox = Outbox(tmp_path_factory.mktemp("state") / "outbox.db")
    valid_pending = [_pending_state()]
    corrupt = {**_pending_state(), "latency": {"999": 1}}  # a bin past the end
    pending = data.draw(mutated(valid_pending, max_mutations=3) | json_values | st.just([corrupt]))
    alarm = data.draw(json_values)
    raw_pending = data.draw(st.sampled_from([json.dumps(pending).encode()]) | st.binary(max_size=50))
    outbox.set_state(STATE_PENDING, raw_pending)
    outbox.set_state(STATE_ALARM, json.dumps(alarm).encode())
    plugin = TelemetryPlugin(
        TelemetrySection(), outbox=outbox, secret=b"s" * 16, topics=TOPICS, link=None, background=False
    )

    class Handle:
        device_id = "dev-1"
        current_model = None

        def counters(self) -> dict[str, Any]:
            return {}

        def local_event(self, kind: str, payload: dict[str, object]) -> None:
            pass

        def activate(self, model: Any) -> None:
            pass

    plugin.start(Handle())  # type: ignore[arg-type]
    plugin.stop()
    outbox.close()


@fuzz_settings()
@given(st.binary(max_size=2000))
def test_a_corrupt_outbox_file_is_set_aside_not_fatal(tmp_path_factory: pytest.TempPathFactory, junk: bytes) -> None:
    path = tmp_path_factory.mktemp("corrupt") / "outbox.db"
    Path(path).write_bytes(junk)
    try:
        box = Outbox(path)
    except EdgelineError:  # OutboxError: it could neither open nor replace the file
        return
    box.put("t/x", b"payload", kind="telemetry", key="k1")
    assert len(box) == 1
    box.close()
