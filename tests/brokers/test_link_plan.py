"""The link's pure parts: which address and MQTT version next, and SUBACK bookkeeping."""

from __future__ import annotations

import pytest

from edgeline.core.errors import TransportError
from edgeline.core.mqtt import plan as plan_mod
from edgeline.core.mqtt.plan import ConnectPlan
from edgeline.core.mqtt.settings import LinkSettings, parse_address
from edgeline.core.mqtt.subacks import SubackBook

A, B, C = ("10.0.0.1", 1883), ("10.0.0.2", 1883), ("10.0.0.3", 1884)


@pytest.fixture(autouse=True)
def _forget() -> None:
    for a in (A, B, C):
        plan_mod.remember(a, None)


def test_auto_falls_back_to_311_once_and_remembers_it() -> None:
    p = ConnectPlan([A], "auto")
    first = p.next()
    assert (first.address, first.version, first.fallback) == (A, "5", False)
    p.report(first, "version_refused")
    second = p.next()
    assert (second.version, second.fallback, second.delay_s) == ("3.1.1", True, 0.0)
    p.report(second, "connected")
    assert plan_mod.remembered(A) == "3.1.1"
    p.report(second, "lost")
    assert p.next().version == "3.1.1"  # no second MQTT 5 try for this address
    assert ConnectPlan([A], "auto").next().version == "3.1.1"  # another link of the process knows it too


def test_no_connack_is_treated_like_a_version_refusal() -> None:
    p = ConnectPlan([A], "auto")
    p.report(p.next(), "no_connack")
    assert p.next().fallback


def test_a_refused_login_is_not_a_version_problem() -> None:
    p = ConnectPlan([A, B], "auto")
    p.report(p.next(), "refused")
    nxt = p.next()
    assert (nxt.address, nxt.version, nxt.fallback) == (B, "5", False)


def test_forced_versions_never_fall_back() -> None:
    for version in ("5", "3.1.1"):
        p = ConnectPlan([A, B], version)
        p.report(p.next(), "version_refused")
        nxt = p.next()
        assert (nxt.address, nxt.version, nxt.fallback) == (B, version, False)


def test_when_both_versions_fail_the_address_is_asked_from_5_again() -> None:
    p = ConnectPlan([A], "auto")
    p.report(p.next(), "no_connack")
    p.report(p.next(), "no_connack")
    assert p.next().version == "5"
    assert plan_mod.remembered(A) is None


def test_rotation_is_immediate_within_a_round_and_backs_off_between_rounds() -> None:
    p = ConnectPlan([A, B, C], "3.1.1", min_s=0.5, max_s=3.0)
    seen = []
    for _ in range(9):
        att = p.next()
        seen.append((att.address, att.delay_s))
        p.report(att, "unreachable")
    assert [a for a, _ in seen] == [A, B, C] * 3
    assert [d for _, d in seen] == [0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0]
    for _ in range(12):
        p.report(p.next(), "unreachable")
    assert max(p.next().delay_s, 0) <= 3.0
    att = p.next()
    p.report(att, "connected")
    p.report(att, "lost")
    again = p.next()
    assert again.address == att.address and again.delay_s == 0.5  # a blip: the same node first


def test_lost_then_dead_node_moves_on() -> None:
    p = ConnectPlan([A, B], "3.1.1", min_s=0.2)
    att = p.next()
    p.report(att, "connected")
    p.report(att, "lost")
    p.report(p.next(), "unreachable")
    assert p.next().address == B


def test_settings_list_every_address_once() -> None:
    s = LinkSettings(host="h1", port=1, brokers=(("h2", 2), ("h1", 1), ("h3", 3)))
    assert s.addresses == [("h1", 1), ("h2", 2), ("h3", 3)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("broker:1884", ("broker", 1884)), ("broker", ("broker", 1883)), ("[::1]:8883", ("::1", 8883))],
)
def test_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:0", "host:70000", "host:port", "a b:1", "ho/st:1", "[::1", "[::1]x"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(TransportError) as err:
        parse_address(text)
    assert err.value.reason == "config"


def test_suback_refusals_are_counted_and_retried_with_backoff() -> None:
    book = SubackBook(min_s=0.5, max_s=2.0, timeout_s=5.0)
    book.sent(1, ["a/b", "a/c", "a/d"], now=0.0)
    assert book.acked(1, [False, True, False], now=0.1) == ["a/c"]
    assert book.stats.refused == 1 and book.stats.last_refused == "a/c"
    assert book.due(0.5) == []
    assert book.due(0.6) == ["a/c"]
    assert book.due(0.7) == []  # sent: waiting for its SUBACK
    book.sent(2, ["a/c"], now=0.7)
    book.acked(2, [True], now=0.8)
    assert book.due(1.7) == []
    assert book.due(1.9) == ["a/c"]  # the wait doubled
    book.sent(3, ["a/c"], now=1.9)
    book.acked(3, [False], now=2.0)
    assert book.waiting == 0 and book.stats.retried == 2


def test_unanswered_subscribes_expire_into_retries_and_unknown_subacks_are_ignored() -> None:
    book = SubackBook(min_s=0.5, timeout_s=5.0)
    assert book.acked(99, [True], now=0.0) == []
    book.sent(7, ["x/y"], now=0.0)
    assert book.expired(4.0) == []
    assert book.expired(6.0) == ["x/y"]
    assert book.stats.unanswered == 1
    assert book.due(6.6) == ["x/y"]
    book.forget("x/y")
    assert book.waiting == 0
