"""The telemetry store behind one interface on SQLite and on a real PostgreSQL: dedupe by key,
batches with events and counters in one transaction, time partitions created as needed, retention,
and the alerts and the drift report reading either backend the same way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_registry.errors import BackendError
from cloud_registry.telemetry.alerts import AlertEngine
from cloud_registry.telemetry.drift_report import build_report
from cloud_registry.telemetry.store import TelemetryStore, open_telemetry_store
from edgeline.core.protocol.delivery import DeviceEvent, EventKind, UpdaterState
from edgeline.core.protocol.telemetry import CONF_BINS, TelemetryWindow
from tests.telemetry.stores import BACKENDS, drop, store_url

DAY = 86400.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % DAY)  # a day boundary


def window(start: float, *, device: str = "a", version: int = 1, drifted: bool = False) -> TelemetryWindow:
    return TelemetryWindow.model_validate(
        {
            "key": uuid.uuid4().hex,
            "device": device * 32,
            "group": "hall-1",
            "model": {"name": "plates", "version": version, "sha256": "c" * 64},
            "start": start,
            "end": start + 60.0,
            "frames": 100,
            "class_counts": {"ok": 100},
            "confidence": [0] * (CONF_BINS - 1) + [100],
            "input_stats": {},
            "drift": {"brightness": {"psi": 2.0 if drifted else 0.01, "threshold": 0.3, "drifted": drifted}},
        }
    )


@pytest.fixture(params=BACKENDS)
def backend_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelemetryStore]:
    s = open_telemetry_store(store_url(request.param, tmp_path), retention_s=3 * DAY)
    assert s.backend == request.param
    try:
        yield s
    finally:
        drop(s)


def test_windows_are_stored_once_and_read_back_alike(backend_store: TelemetryStore) -> None:
    s = backend_store
    ws = [window(T0 + i * 60, device="ab"[i % 2], version=1 + i % 2) for i in range(10)]
    assert s.add_many(ws[:6]) == [True] * 6
    # a redelivered batch overlapping the first, with one window twice in the batch itself
    again = [*ws[4:], ws[9]]
    assert s.add_many(again) == [False, False, True, True, True, True, False]
    assert s.add(ws[0]) is False
    assert s.count() == 10 and s.count("plates") == 10 and s.count("other") == 0
    assert s.keys() == {w.key for w in ws}
    assert s.models() == ["plates"] and s.versions("plates") == [1, 2]
    assert s.counters()["duplicates"] == 4
    got = [sw.window for sw in s.windows("plates", version=2, since=T0 + 120, until=T0 + 540)]
    assert [w.key for w in got] == [ws[i].key for i in (3, 5, 7)]
    assert got[0] == ws[3]  # the stored payload parses to the same window


def test_a_batch_stores_windows_events_and_counters_together(backend_store: TelemetryStore) -> None:
    event = DeviceEvent(device_id="cam-1", kind=EventKind.COMMITTED, state=UpdaterState.COMMITTED, sequence=3)
    raw = event.to_bytes()
    w = window(T0)
    new_w, new_e = backend_store.store_batch([(w, None)], [(event, raw)], counters={"rejected.schema": 2})
    assert (new_w, new_e) == ([True], [True])
    assert backend_store.store_batch([(w, None)], [(event, raw)])[1] == [False]
    c = backend_store.counters()
    assert c["rejected.schema"] == 2 and c["duplicates"] == 1 and c["events.duplicates"] == 1
    assert backend_store.event_ids("cam-1") == {event.event_id} and backend_store.event_ids("cam-2") == set()


def test_retention_removes_old_windows_only(backend_store: TelemetryStore) -> None:
    s = backend_store
    old = [window(T0 + i * 3600) for i in range(3)]  # day 0
    mid = [window(T0 + 2 * DAY + 60)]  # day 2
    new = [window(T0 + 5 * DAY + 60)]  # day 5
    s.add_many([*old, *mid, *new])
    assert s.retain(now=T0 + 4 * DAY) == 3  # cutoff at day 1: day 0 goes, day 2 stays
    assert s.keys() == {mid[0].key, new[0].key}
    assert s.retain(now=T0 + 4 * DAY) == 0
    assert s.add(old[0]) is True  # a window the retention removed is new again (the ingest refuses it)


def test_postgresql_partitions_by_window_start(tmp_path: Path) -> None:
    s = open_telemetry_store(store_url("postgresql", tmp_path), retention_s=2 * DAY)
    try:
        assert s.partitions() == []  # type: ignore[attr-defined]
        s.add_many([window(T0 + 10), window(T0 + 20), window(T0 + DAY + 5), window(T0 + 3 * DAY)])
        assert s.partitions() == [int(T0), int(T0 + DAY), int(T0 + 3 * DAY)]  # type: ignore[attr-defined]
        # a second worker on the same schema finds them and creates only what is missing
        other = open_telemetry_store(s.url, retention_s=2 * DAY)
        other.add_many([window(T0 + 15), window(T0 + 4 * DAY)])
        assert len(other.partitions()) == 4  # type: ignore[attr-defined]
        # a retention run drops whole partitions: day 0 and day 1 are past the cutoff at day 3.5
        assert s.retain(now=T0 + 4.5 * DAY) == 4
        assert s.partitions() == [int(T0 + 3 * DAY), int(T0 + 4 * DAY)]  # type: ignore[attr-defined]
        # the other worker's cache still names the dropped day 0: its write recreates it
        assert other.add(window(T0 + 30)) is True
        assert s.count() == 3
        other.close()
    finally:
        drop(s)


def test_alert_episodes_and_drift_report_on_both(backend_store: TelemetryStore) -> None:
    engine = AlertEngine(backend_store, need=2, of=2, clear=2)
    fired = []
    for i in range(4):
        w = window(T0 + i * 60, drifted=i < 2)
        assert backend_store.add(w)
        fired += engine.on_window(w)
    assert [(a.kind, a.state) for a in fired] == [("drift", "firing"), ("drift", "resolved")]
    assert engine.active() == []
    # a restarted engine reads the episode back and fires nothing for the same state
    again = AlertEngine(backend_store, need=2, of=2, clear=2)
    assert again.on_window(window(T0 + 600)) == []
    (report,) = build_report(backend_store, "plates")
    assert report.windows == 4 and report.frames == 400


def test_bad_store_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="unsupported telemetry store URL"):
        open_telemetry_store("mysql://x/y")
    with pytest.raises(BackendError, match="invalid schema name"):
        open_telemetry_store("postgresql://postgres@127.0.0.1:5432/test?schema=Robert');DROP")
    with pytest.raises(BackendError, match="cannot open the telemetry store on PostgreSQL"):
        open_telemetry_store("postgresql://postgres@127.0.0.1:1/test")
    plain = open_telemetry_store(tmp_path / "plain.db")
    assert plain.backend == "sqlite" and plain.url.endswith("plain.db")
    plain.close()


def test_the_cli_finds_the_telemetry_store_beside_the_registry(tmp_path: Path) -> None:
    from edgeline.cli.telemetry_common import telemetry_exists, telemetry_url

    pg = "postgresql://postgres@127.0.0.1:5432/test"
    assert telemetry_url(tmp_path, None) == f"sqlite:///{tmp_path / 'telemetry.db'}"
    assert telemetry_url(tmp_path, "x/t.db", f"{pg}?schema=reg") == "sqlite:///x/t.db"
    assert telemetry_url(tmp_path, None, f"{pg}?schema=reg") == f"{pg}?schema=reg_telemetry"
    assert telemetry_url(tmp_path, None, pg) == f"{pg}?schema=telemetry"
    assert telemetry_url(tmp_path, f"{pg}?schema=t1", f"sqlite:///{tmp_path}/r.db") == f"{pg}?schema=t1"
    assert not telemetry_exists(f"sqlite:///{tmp_path / 'none.db'}") and telemetry_exists(pg)
