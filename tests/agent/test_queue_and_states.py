"""Pure logic: the frame queue's named backpressure policies and the camera-source state machine."""

from __future__ import annotations

import random
import threading
import time

import pytest

from edge_agent.errors import SourceError
from edge_agent.frame_queue import FrameQueue, Policy
from edge_agent.source_state import Backoff, SourceState, SourceStateMachine, StallWatchdog


def test_drop_oldest_keeps_the_newest_and_counts_drops() -> None:
    q: FrameQueue[int] = FrameQueue(3, "drop_oldest")
    for i in range(10):
        assert q.put(i)
    assert q.dropped == 7
    assert [q.get(0), q.get(0), q.get(0)] == [7, 8, 9]
    assert q.get(0) is None


def test_block_waits_for_room_and_drops_nothing() -> None:
    q: FrameQueue[int] = FrameQueue(2, Policy.BLOCK)
    assert q.put(0) and q.put(1)
    assert q.put(2, timeout=0.05) is False  # full: the producer waits, nothing dropped
    got: list[int] = []

    def consume() -> None:
        while (item := q.get(timeout=2)) is not None:
            got.append(item)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(2, 50):
        assert q.put(i, timeout=2)
    q.close()
    t.join(5)
    assert got == list(range(50))
    assert q.dropped == 0


def test_close_wakes_a_blocked_producer_and_lets_the_consumer_drain() -> None:
    q: FrameQueue[int] = FrameQueue(1, "block")
    q.put(1)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(q.put(2, timeout=10)))
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(5)
    assert result == [False]
    assert q.get(0) == 1 and q.get(0) is None and q.drained()
    assert q.put(3) is False


def test_bad_sizes_and_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        FrameQueue(0, "block")
    with pytest.raises(ValueError):
        FrameQueue(1, "drop_newest")


def test_backoff_grows_exponentially_to_a_ceiling() -> None:
    b = Backoff(0.5, 4.0)
    assert [b.delay(i) for i in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_live_camera_loss_reconnects_with_growing_delay_then_resets() -> None:
    m = SourceStateMachine(live=True, backoff=Backoff(0.1, 1.0, jitter=0.0))
    assert m.start() is SourceState.CONNECTING
    assert m.opened() is SourceState.STREAMING
    assert m.lost("camera lost") is SourceState.RECONNECTING and m.reconnects == 1
    delays = [m.delay]
    m.retry()
    for _ in range(4):
        m.open_failed("refused")
        delays.append(m.delay)
        m.retry()
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert m.opened() is SourceState.STREAMING and m.attempts == 0 and m.last_error == ""


def test_backoff_is_capped_and_jittered_below_the_cap() -> None:
    b = Backoff(0.5, 2.0)  # the defaults: cap 2 s, jitter down to half
    assert b.delay(10_000) == 2.0  # capped, and no float overflow after days of retries
    m = SourceStateMachine(live=True, backoff=b, rng=random.Random(1))
    m.start()
    delays = []
    for _ in range(200):
        m.open_failed("refused")
        delays.append(m.delay)
        m.retry()
    tail = delays[5:]
    assert all(1.0 <= d <= 2.0 for d in tail), (min(tail), max(tail))
    assert len({round(d, 6) for d in tail}) > 100  # jittered: cameras that failed together spread out


def test_stall_watchdog_deadline_follows_the_frame_interval_within_bounds() -> None:
    w = StallWatchdog(intervals=10, min_s=1.0, max_s=5.0)
    w.start(nominal_interval_s=0.0)
    assert w.timeout_s == 5.0  # nothing known yet: the ceiling
    w.start(nominal_interval_s=1 / 25)
    assert w.timeout_s == 5.0  # the first frame of a connection may wait for a key frame
    w.frame(0.0)
    assert w.timeout_s == 1.0  # then 10 x 40 ms = 0.4 s (declared), raised to the floor
    for i in range(1, 20):
        w.frame(i * 0.3)  # a 3.3 frames/s camera
    assert abs(w.timeout_s - 3.0) < 1e-9
    assert not w.stalled(2.9) and w.stalled(3.1)
    off = StallWatchdog(intervals=0)
    assert not off.stalled(1e9)


def test_a_stall_is_a_loss_that_is_counted() -> None:
    m = SourceStateMachine(live=True)
    m.start()
    m.opened()
    assert m.stalled("stalled: no new frame for 5.0 s") is SourceState.RECONNECTING
    assert m.stalls == 1 and m.reconnects == 1 and m.last_error.startswith("stalled")


def test_live_camera_gives_up_after_max_reconnects() -> None:
    m = SourceStateMachine(live=True, max_reconnects=2)
    m.start()
    assert m.open_failed("x") is SourceState.RECONNECTING
    m.retry()
    assert m.open_failed("x") is SourceState.RECONNECTING
    m.retry()
    assert m.open_failed("x") is SourceState.FAILED and m.done


def test_file_source_ends_or_loops_and_fails_fast_when_missing() -> None:
    once = SourceStateMachine(live=False)
    once.start()
    once.opened()
    assert once.lost() is SourceState.ENDED and once.done
    looping = SourceStateMachine(live=False, loop=True)
    looping.start()
    looping.opened()
    assert looping.lost() is SourceState.CONNECTING
    missing = SourceStateMachine(live=False)
    missing.start()
    assert missing.open_failed("no such file") is SourceState.FAILED


def test_illegal_transitions_are_refused() -> None:
    m = SourceStateMachine(live=True)
    with pytest.raises(SourceError, match="cannot go from IDLE to STREAMING"):
        m.opened()
    m.start()
    m.stop()
    with pytest.raises(SourceError):
        m.start()
    assert m.stop() is SourceState.STOPPED
