"""The durable outbox on a real SQLite file: cap, named drop policy, TTL, idempotency, restarts,
corruption."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edge_agent.errors import OutboxError
from edge_agent.outbox.store import ROW_OVERHEAD, Outbox
from tests.telemetry.conftest import SimClock

TOPIC = "t"


def size_of(payload: bytes, key: str) -> int:
    return len(payload) + len(TOPIC) + len(key) + ROW_OVERHEAD


def test_put_peek_ack_and_idempotent_keys(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    assert ob.put(TOPIC, b"w1", kind="telemetry", key="k1")
    assert not ob.put(TOPIC, b"w1 again", kind="telemetry", key="k1")  # same key: queued once
    assert ob.put(TOPIC, b"e1", kind="event", key="k2")
    msgs = ob.peek(10)
    assert [m.key for m in msgs] == ["k2", "k1"]  # events first
    assert msgs[1].payload == b"w1"
    assert ob.ack([msgs[0].id]) == 1
    assert [m.key for m in ob.peek(10)] == ["k1"]
    assert ob.stats().counters["delivered"] == 1


def test_cap_drops_oldest_telemetry_first_and_never_events(tmp_path: Path) -> None:
    payload = b"x" * 1000
    cap = 10 * size_of(payload, "t00")
    ob = Outbox(tmp_path / "o.db", max_bytes=cap)
    ob.put(TOPIC, payload, kind="event", key="e00")
    for i in range(30):
        ob.put(TOPIC, payload, kind="telemetry", key=f"t{i:02d}")
    ob.put(TOPIC, payload, kind="event", key="e01")
    keys = [m.key for m in ob.peek(100)]
    st = ob.stats()
    assert st.bytes <= cap
    assert keys[:2] == ["e00", "e01"]  # both events kept
    assert keys[2:] == [f"t{i:02d}" for i in range(22, 30)]  # the newest telemetry survives
    assert ob.dropped("telemetry") == 22
    assert st.counters["dropped.telemetry.cap"] == 22
    assert "dropped.event.cap" not in st.counters


def test_events_alone_may_exceed_the_cap_but_are_kept(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=2000)
    for i in range(5):
        assert ob.put(TOPIC, b"y" * 1000, kind="event", key=f"e{i}")
    assert len(ob) == 5
    assert ob.stats().dropped == 0


def test_refuse_new_policy_keeps_the_oldest(tmp_path: Path) -> None:
    payload = b"x" * 500
    ob = Outbox(tmp_path / "o.db", max_bytes=3 * size_of(payload, "t0"), policy="refuse-new-telemetry")
    results = [ob.put(TOPIC, payload, kind="telemetry", key=f"t{i}") for i in range(5)]
    assert results == [True, True, True, False, False]
    assert [m.key for m in ob.peek(10)] == ["t0", "t1", "t2"]
    assert ob.dropped() == 2


def test_ttl_expires_telemetry_not_events(tmp_path: Path) -> None:
    clock = SimClock()
    ob = Outbox(tmp_path / "o.db", ttl_s=86400, clock=clock)
    ob.put(TOPIC, b"old", kind="telemetry", key="old")
    ob.put(TOPIC, b"ev", kind="event", key="ev")
    clock.advance(2 * 86400)
    ob.put(TOPIC, b"new", kind="telemetry", key="new")
    assert ob.expire() == 1
    assert sorted(m.key for m in ob.peek(10)) == ["ev", "new"]
    assert ob.stats().counters["dropped.telemetry.ttl"] == 1


def test_survives_restart_with_queue_counters_and_state(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path, max_bytes=10_000)
    for i in range(50):
        ob.put(TOPIC, b"z" * 300, kind="telemetry", key=f"k{i}")
    ob.set_state("pending", b'{"a": 1}')
    before = (len(ob), ob.stats().bytes, ob.dropped())
    ob.close()
    again = Outbox(path, max_bytes=10_000)
    assert (len(again), again.stats().bytes, again.dropped()) == before
    assert again.get_state("pending") == b'{"a": 1}'
    assert before[2] > 0


def test_bad_input_is_refused_with_outbox_error(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_message_bytes=1024)
    with pytest.raises(OutboxError, match="kind"):
        ob.put(TOPIC, b"x", kind="gossip", key="k")
    with pytest.raises(OutboxError, match="exceeds"):
        ob.put(TOPIC, b"x" * 2000, kind="telemetry", key="k")
    with pytest.raises(OutboxError, match="key"):
        ob.put(TOPIC, b"x", kind="telemetry", key="")
    with pytest.raises(OutboxError, match="bytes"):
        ob.put(TOPIC, "text", kind="telemetry", key="k")  # type: ignore[arg-type]
    with pytest.raises(OutboxError):
        Outbox(tmp_path / "p.db", policy="drop-everything")  # type: ignore[arg-type]
    assert len(ob) == 0


def test_corrupt_database_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not an sqlite database" * 100)
    ob = Outbox(path)
    assert ob.put(TOPIC, b"fresh", kind="telemetry", key="k")
    aside = list(tmp_path.glob("o.db.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not")
    assert ob.stats().counters["corrupt.replaced"] == 1


def test_refusals_drop_telemetry_after_retries_and_keep_events(tmp_path: Path) -> None:
    clock = SimClock()
    ob = Outbox(tmp_path / "o.db", max_refusals=3, clock=clock)
    ob.put(TOPIC, b"w", kind="telemetry", key="w")
    ob.put(TOPIC, b"e", kind="event", key="e")
    for _ in range(5):
        for m in ob.peek(10):
            ob.refused(m.id, "not authorised")
        assert ob.peek(10) == []  # deferred
        clock.advance(7200)
    assert [m.key for m in ob.peek(10)] == ["e"]
    assert ob.stats().counters["dropped.telemetry.refused"] == 1


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")

    def write(t: int) -> None:
        for i in range(100):
            ob.put(TOPIC, b"p", kind="telemetry", key=f"{t}-{i}")

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(ob) == 400
    # a second process opening the same file sees the same queue (WAL)
    other = sqlite3.connect(tmp_path / "o.db")
    assert other.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 400
    other.close()


def test_disk_use_stays_bounded_by_the_cap_through_days_of_churn(tmp_path: Path) -> None:
    """3,000 windows (3.6 MB) into a 256 KB outbox: the queue keeps the newest that fit, and the files
    on disk (database, write-ahead log, shared memory) stay in proportion to the cap."""
    cap = 256 * 1024
    ob = Outbox(tmp_path / "o.db", max_bytes=cap)
    for i in range(3000):
        ob.put("edgeline/default/x", b"w" * 1200, kind="telemetry", key=f"k{i:05d}")
    on_disk = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert ob.stats().bytes <= cap
    assert on_disk < 2.5 * cap
    kept = [m.key for m in ob.peek(1000)]
    assert kept == [f"k{i:05d}" for i in range(3000 - len(kept), 3000)]
    assert ob.dropped() == 3000 - len(kept) > 2500


def test_a_full_disk_drops_oldest_telemetry_and_refuses_clearly_when_only_events_are_left(tmp_path: Path) -> None:
    """SQLite's page limit stands in for a full filesystem: the same SQLITE_FULL error."""
    ob = Outbox(tmp_path / "o.db", max_bytes=64 * 1024 * 1024)
    for i in range(40):
        ob.put(TOPIC, b"t" * 3000, kind="telemetry", key=f"t{i:02d}")
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count={pages}")
    assert ob.put(TOPIC, b"e" * 3000, kind="event", key="e-1")  # room made by dropping old telemetry
    st = ob.stats()
    assert st.counters["dropped.telemetry.disk_full"] >= 1
    assert "t00" not in {m.key for m in ob.peek(100)} and "e-1" in {m.key for m in ob.peek(100)}
    ob.ack([m.id for m in ob.peek(100) if m.kind == "telemetry"])
    while True:  # fill the disk with events only
        try:
            ob.put(TOPIC, b"e" * 3000, kind="event", key=f"e-{len(ob) + 1}")
        except OutboxError as exc:
            assert "full" in str(exc)
            break
    events = len(ob)
    assert events > 1 and all(m.kind == "event" for m in ob.peek(1000))
