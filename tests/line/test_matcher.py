"""The trigger matcher on hand-made timestamps: next frame, closest frame, misses, refusals."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edge_agent.line.matcher import Match, Miss, ResultState, Trigger, TriggerMatcher


@dataclass(frozen=True)
class F:
    ts: float
    n: int = 0


def trig(i: int, received: float, ts: float | None = None) -> Trigger:
    return Trigger(i, f"P{i}", received, ts, "test")


def test_a_trigger_without_time_takes_the_next_frame() -> None:
    m: TriggerMatcher[F] = TriggerMatcher(0.1)
    assert m.frame(F(9.99, 1), 9.99) == []  # before the trigger: not its frame
    assert m.trigger(trig(1, 10.0), 10.0) == []
    out = m.frame(F(10.02, 2), 10.02)
    assert out == [Match(trig(1, 10.0), F(10.02, 2))]
    assert m.pending == 0


def test_a_trigger_without_time_is_missed_after_the_window() -> None:
    m: TriggerMatcher[F] = TriggerMatcher(0.1)
    m.trigger(trig(1, 10.0), 10.0)
    assert m.expire(10.05) == []
    out = m.expire(10.11)
    assert len(out) == 1 and isinstance(out[0], Miss) and out[0].state is ResultState.MISSED
    # a frame that comes too late is not given to it either
    m.trigger(trig(2, 20.0), 20.0)
    out = m.frame(F(20.2), 20.2)
    assert isinstance(out[0], Miss) and out[0].trigger.trigger_id == 2


def test_a_timed_trigger_takes_the_closest_buffered_frame_at_once_when_nothing_can_beat_it() -> None:
    m: TriggerMatcher[F] = TriggerMatcher(0.05)
    for i, ts in enumerate((9.90, 9.96, 9.99)):
        m.frame(F(ts, i), ts)
    # trigger time 9.995, now 10.0: the 9.99 frame is 5 ms away; a later frame would be >= 5 ms away
    out = m.trigger(trig(1, 10.0, ts=9.995), 10.0)
    assert out == [Match(trig(1, 10.0, 9.995), F(9.99, 2))]


def test_a_timed_trigger_waits_for_a_frame_that_could_be_closer() -> None:
    m: TriggerMatcher[F] = TriggerMatcher(0.05)
    m.frame(F(9.97), 9.97)
    t = trig(1, 9.981, ts=9.98)  # the 9.97 frame is 10 ms away, only 1 ms has passed
    assert m.trigger(t, 9.981) == []
    out = m.frame(F(9.983, 7), 9.983)
    assert out == [Match(t, F(9.983, 7))]


def test_a_timed_trigger_outside_every_frame_window_is_missed() -> None:
    m: TriggerMatcher[F] = TriggerMatcher(0.02)
    m.frame(F(1.0), 1.0)
    t = trig(1, 5.0, ts=4.0)  # frames were at 1.0; the window around 4.0 has passed
    out = m.trigger(t, 5.0)
    assert len(out) == 1 and isinstance(out[0], Miss) and out[0].state is ResultState.MISSED


def test_two_triggers_close_together_each_get_one_outcome_in_order() -> None:
    m: TriggerMatcher[F] = TriggerMatcher(0.1)
    m.trigger(trig(1, 1.0), 1.0)
    m.trigger(trig(2, 1.001), 1.001)
    out = m.frame(F(1.01), 1.01)
    assert [o.trigger.trigger_id for o in out] == [1, 2]


def test_beyond_max_pending_a_trigger_is_refused_not_dropped() -> None:
    m: TriggerMatcher[F] = TriggerMatcher(1.0, max_pending=2)
    assert m.trigger(trig(1, 0.0), 0.0) == [] and m.trigger(trig(2, 0.0), 0.0) == []
    out = m.trigger(trig(3, 0.0), 0.0)
    assert len(out) == 1 and isinstance(out[0], Miss) and out[0].state is ResultState.REFUSED
    assert m.pending == 2


def test_flush_decides_every_waiting_trigger() -> None:
    m: TriggerMatcher[F] = TriggerMatcher(1.0)
    m.frame(F(0.5), 0.5)
    m.trigger(trig(1, 0.6), 0.6)
    m.trigger(trig(2, 0.6, ts=0.55), 0.6)
    out = m.flush(0.7)
    assert isinstance(out[0], Miss) and isinstance(out[1], Match)
    assert m.pending == 0


def test_the_frame_buffer_stays_bounded_and_old_frames_go() -> None:
    m: TriggerMatcher[F] = TriggerMatcher(0.05, buffer_frames=4)
    for i in range(100):
        m.frame(F(i * 0.01, i), i * 0.01)
    assert len(m._frames) <= 4
    assert m.next_deadline() is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        TriggerMatcher(0.0)
