"""The MQTT link's own topic-filter matcher (it runs for every artifact chunk) against paho's
reference implementation, on generated filters and topics, including ``$`` topics, empty levels and
``$share`` subscriptions."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from hypothesis import example, given
from hypothesis import strategies as st

from edgeline.core.mqtt_link import filter_matches
from tests.fuzz.conftest import fuzz_settings

# few distinct level names, so generated filters and topics often match each other
level = st.sampled_from(["", "a", "b", "edgeline", "chunks", "0", "17", "$SYS", "$x", "é"])
topic_levels = st.lists(level, min_size=1, max_size=6)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(level | st.just("+"), min_size=1, max_size=6))
    if draw(st.booleans()):
        levels.append("#")  # a multi-level wildcard is only valid as the last level
    return "/".join(levels)


@fuzz_settings(ci=400, full=20000)
@given(topic_filters(), topic_levels)
@example("a/#", ["a"])  # "#" also matches the parent level
@example("#", ["$SYS", "x"])  # wildcards never match $-topics
@example("+/b", ["$x", "b"])
@example("a/+", ["a", ""])  # an empty level is a level
@example("edgeline/+/chunks/+", ["edgeline", "0", "chunks", "17"])
def test_filter_matches_agrees_with_paho(topic_filter: str, levels: list[str]) -> None:
    topic = "/".join(levels)
    assert filter_matches(topic_filter, topic) == mqtt.topic_matches_sub(topic_filter, topic)


@fuzz_settings(ci=100, full=5000)
@given(topic_filters(), topic_levels)
def test_shared_subscription_matches_like_its_filter(topic_filter: str, levels: list[str]) -> None:
    topic = "/".join(levels)
    assert filter_matches(f"$share/ingest/{topic_filter}", topic) == mqtt.topic_matches_sub(topic_filter, topic)
