"""The ingest's batches without a broker: one transaction for windows, events and refusals, outcomes
in message order, and the time bounds (a window from beyond the retention, or from more than a day
ahead, is refused for good with its key, so the device stops sending it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_registry.errors import BackendError
from cloud_registry.telemetry.ingestor import Ingestor
from cloud_registry.telemetry.store import TelemetryStore
from edgeline.core.protocol.delivery import DeviceEvent, EventKind, UpdaterState
from edgeline.core.protocol.partitions import TelemetryTopics
from edgeline.core.protocol.telemetry import MAX_WINDOW_BYTES
from edgeline.core.protocol.topics import Topics
from tests.telemetry.stores import BACKENDS, opened, pg_url, store_url
from tests.telemetry.test_window_schema import body

T = Topics()
NOW = 1_700_000_000.0
DAY = 86400.0


def payload(key: str, start: float = NOW - 120, **over: object) -> bytes:
    return json.dumps(body(key=key, start=start, end=start + 60, **over)).encode()


def test_one_batch_keeps_message_order_and_counts_every_refusal(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    ing = Ingestor(store, T, clock=lambda: NOW)
    topic = TelemetryTopics(T, 8).for_device("cam-1", "f" * 32)
    ev = DeviceEvent(device_id="cam-1", kind=EventKind.COMMITTED, state=UpdaterState.COMMITTED, sequence=1)
    batch = [
        ing.prepare(topic, payload("1" * 32)),
        ing.prepare(topic, payload("1" * 32)),  # the same window twice in one batch
        ing.prepare(topic, payload("2" * 32, frames=-1)),  # the schema refuses it
        ing.prepare(topic, b"x" * (MAX_WINDOW_BYTES + 1)),
        ing.prepare(topic, payload("3" * 32), retained=True),
        ing.prepare_event(T.device_events("cam-1"), ev.to_bytes()),
        ing.prepare_event(T.device_events("cam-2"), ev.to_bytes()),  # another device's event
        ing.prepare(T.device_telemetry("cam-1"), payload("4" * 32)),  # the old topic, still read
    ]
    out = ing.commit(batch)
    assert [o.result for o in out] == [
        "stored",
        "duplicate",
        "rejected: schema",
        "rejected: oversize",
        "rejected: retained",
        "stored",
        "rejected: schema",
        "stored",
    ]
    assert [o.key for o in out][:3] == ["1" * 32, "1" * 32, "2" * 32] and out[3].key is None
    assert all(o.device_id == "cam-1" for o in out[:6]) and out[6].device_id == "cam-2"
    c = store.counters()
    assert c["duplicates"] == 1 and c["rejected.schema"] == 1 and c["rejected.oversize"] == 1
    assert c["rejected.retained"] == 1 and c["events.rejected.schema"] == 1
    assert store.keys() == {"1" * 32, "4" * 32} and store.event_ids() == {ev.event_id}


def test_windows_outside_the_time_bounds_are_refused_with_their_key(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db", retention_s=7 * DAY)
    ing = Ingestor(store, T, clock=lambda: NOW)
    topic = T.device_telemetry("cam-1")
    future = ing.receive(topic, payload("a" * 32, start=NOW + 2 * DAY))
    old = ing.receive(topic, payload("b" * 32, start=NOW - 8 * DAY))
    fine = ing.receive(topic, payload("c" * 32, start=NOW - 6 * DAY))
    assert (future.result, future.key) == ("rejected: future", "a" * 32)
    assert (old.result, old.key) == ("rejected: expired", "b" * 32)
    assert fine.result == "stored" and store.keys() == {"c" * 32}
    assert store.counters()["rejected.future"] == 1 and store.counters()["rejected.expired"] == 1
    # without a retention an old window is kept on SQLite (a device back after months still reports);
    # on PostgreSQL one older than a year is refused (each day of starts would be a partition)
    keep = Ingestor(TelemetryStore(tmp_path / "keep.db"), T, clock=lambda: NOW)
    assert keep.receive(topic, payload("d" * 32, start=1000.0)).result == "stored"
    with opened(pg_url()) as pg:
        ing_pg = Ingestor(pg, T, clock=lambda: NOW)
        assert ing_pg.receive(topic, payload("e" * 32, start=NOW - 300 * DAY)).result == "stored"
        assert ing_pg.receive(topic, payload("f" * 32, start=1000.0)).result == "rejected: expired"
        assert pg.partitions() == [int((NOW - 300 * DAY) // DAY * DAY)]  # type: ignore[attr-defined]


def test_a_failed_batch_stores_nothing(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    ing = Ingestor(store, T, clock=lambda: NOW)
    batch = [ing.prepare(T.device_telemetry("cam-1"), payload(f"{i:032x}")) for i in range(5)]
    store.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON windows WHEN NEW.key LIKE '%4'"
        " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(BackendError, match="disk full"):
        ing.commit(batch)
    assert store.count() == 0 and ing.stats.stored == 0  # not one of the five: the batch is one transaction
    store.execute("DROP TRIGGER refuse")
    assert [o.result for o in ing.commit(batch)] == ["stored"] * 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_value_the_store_cannot_hold_is_refused_alone(backend: str, tmp_path: Path) -> None:
    """An event whose sequence passes the schema but not a 64-bit column: the batch is split until
    that message is alone, it is refused for good (acknowledged as rejected), the rest is stored."""
    from cloud_registry.telemetry.ingest import IngestService
    from edgeline.core.mqtt_link import LinkSettings

    with opened(store_url(backend, tmp_path)) as store:
        ing = Ingestor(store, T, clock=lambda: NOW)
        svc = IngestService(ing, LinkSettings(port=1, client_id="never-connected"))
        bad = DeviceEvent(device_id="cam-1", kind=EventKind.COMMITTED, state=UpdaterState.COMMITTED, sequence=2**70)
        batch = [ing.prepare(T.device_telemetry("cam-1"), payload(f"{i:032x}")) for i in range(6)]
        batch.insert(4, ing.prepare_event(T.device_events("cam-1"), bad.to_bytes()))
        out = svc._commit(batch)
        assert out is not None
        assert [o.result for o in out] == ["stored"] * 4 + ["rejected: store"] + ["stored"] * 2
        assert out[4].key == bad.event_id and out[4].kind == "events"  # acknowledged as rejected
        assert store.count() == 6 and store.event_ids() == set()
