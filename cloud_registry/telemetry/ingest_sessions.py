"""Which MQTT sessions an ingest worker opens, and which filters each one subscribes.

nats-server (2.9 to this day) turns every QoS 1 subscription of an MQTT session into a JetStream
consumer allowed ``max_ack_pending`` (1024) unacknowledged messages, but lets the whole session
hold only ``max_ack_pending`` of them: with several subscriptions and a backlog, the consumers
hand over more than the session may hold, and the session drops the excess without telling
JetStream, which sends it again only when the consumer's ack wait (30 s) expires. A worker
subscribed to 4 partition topics drained 2,000 queued windows in 30.1 s (1,024 at once, the other
976 as redeliveries 30 s later); on one topic, 0.4 s. A plain paho subscriber with automatic
acknowledgements does the same, so it is the broker's accounting, not the ingest.

So with ``per_filter`` every telemetry filter gets a session of its own (client id
``<id>-t<partition>``, ``<id>-t`` for the unpartitioned topic): one consumer per session, never more
in flight than it may hold. The worker's own client id keeps the rest (deployment events, the fleet
view's subscriptions, the acknowledgements it publishes). Every broker accepts this; it costs a
connection per filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Sessions = Literal["auto", "one", "per_filter"]
SESSIONS: tuple[str, ...] = ("auto", "one", "per_filter")


@dataclass(frozen=True)
class SessionPlan:
    client_id: str
    filters: tuple[str, ...]


def per_filter(sessions: str, partitions: int) -> bool:
    """``auto``: a session per filter when the telemetry is partitioned (a worker then holds several
    telemetry filters); one session for the unpartitioned topic, as before."""
    if sessions not in SESSIONS:
        raise ValueError(f"sessions must be one of {', '.join(SESSIONS)}, not {sessions!r}")
    return sessions == "per_filter" or (sessions == "auto" and partitions > 0)


def filter_suffix(topic_filter: str) -> str:
    """``t<partition>`` for a partition filter (``.../telemetry/3``), ``t`` for the unpartitioned one."""
    last = topic_filter.rsplit("/", 1)[-1]
    return f"t{last}" if last.isdigit() else "t"


def plan_sessions(
    client_id: str, telemetry_filters: list[str], other_filters: list[str], split: bool
) -> list[SessionPlan]:
    """The worker's sessions: its own client id first (the other filters, and the telemetry ones
    unless ``split``), then one per telemetry filter when ``split`` (a worker without a client id
    has clean sessions with ids the broker gives: so have its telemetry sessions)."""
    if not split:
        return [SessionPlan(client_id, (*telemetry_filters, *other_filters))]
    plans = [SessionPlan(client_id, tuple(other_filters))]
    seen: set[str] = set()
    for f in telemetry_filters:
        cid = f"{client_id}-{filter_suffix(f)}" if client_id else ""  # no id: each a clean random one
        if cid and cid in seen:
            raise ValueError(f"two telemetry filters would share the session {cid!r}: {telemetry_filters}")
        seen.add(cid)
        plans.append(SessionPlan(cid, (f,)))
    return plans


__all__ = ["SESSIONS", "SessionPlan", "Sessions", "filter_suffix", "per_filter", "plan_sessions"]
