"""Partitioned telemetry topics: N ingest workers split the windows on any MQTT 3.1.1 broker.

A device with ``[telemetry] partitions = N`` (N >= 1) publishes its windows on::

    <root>/<fleet>/devices/<id>/telemetry/<p>      p = partition_of(pseudonym, N), 0 <= p < N

The partition comes from the device's keyed pseudonym (the one its windows carry), so every window
of a device lands in one partition: the worker that owns it sees all of that device's windows in
order (the alert engine's per-device drift rule needs them together). Worker ``i`` of ``W`` owns the
partitions ``p`` with ``p % W == i`` and subscribes ``<root>/<fleet>/devices/+/telemetry/<p>`` for
each. Where the broker offers MQTT 5 shared subscriptions, each filter may also be shared
(``$share/<group>/...``) so several workers split one partition.

``partitions = 0`` keeps the topic of earlier releases (``devices/<id>/telemetry``); the ingest keeps
reading it (its worker 0, or every worker through a shared subscription), so a fleet moves to
partitions device by device. The per-device prefix stays, so per-device ACL patterns still apply
(``devices/<id>/telemetry/+`` for writing).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.topics import Topics, check_segment, check_unit

MAX_PARTITIONS = 4096


def check_partitions(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_PARTITIONS:
        raise ProtocolError(f"telemetry partitions {n!r}: an integer from 0 (unpartitioned) to {MAX_PARTITIONS}")
    return n


def partition_of(pseudonym: str, partitions: int) -> int:
    """The partition of a device's windows: its pseudonym's SHA-256, modulo ``partitions`` (>= 1)."""
    if check_partitions(partitions) == 0:
        raise ProtocolError("partition_of needs at least one partition")
    digest = hashlib.sha256(pseudonym.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def worker_partitions(partitions: int, workers: int, index: int) -> list[int]:
    """The partitions worker ``index`` of ``workers`` owns (every partition has exactly one owner)."""
    check_partitions(partitions)
    if workers < 1 or not 0 <= index < workers:
        raise ProtocolError(f"worker {index} of {workers}: need 0 <= index < workers")
    return list(range(index, partitions, workers))


@dataclass(frozen=True, slots=True)
class TelemetryTopics:
    """The telemetry topics of one fleet with ``partitions`` partitions (0: the unpartitioned topic)."""

    topics: Topics
    partitions: int = 0

    def __post_init__(self) -> None:
        check_partitions(self.partitions)

    def for_device(self, device_id: str, pseudonym: str) -> str:
        """Where a device publishes its windows."""
        if self.partitions == 0:
            return self.topics.device_telemetry(device_id)
        return partition_topic(self.topics, device_id, partition_of(pseudonym, self.partitions))

    def partition_filter(self, partition: int) -> str:
        if not 0 <= partition < max(1, self.partitions):
            raise ProtocolError(f"partition {partition} is not in 0..{self.partitions - 1}")
        return f"{self.topics.all_device_telemetry()}/{partition}"

    def filters(self, workers: int = 1, index: int = 0, *, legacy: bool | None = None) -> list[str]:
        """What worker ``index`` of ``workers`` subscribes: its partitions, and the unpartitioned
        topic when ``legacy`` (default: worker 0 only)."""
        out = [self.partition_filter(p) for p in worker_partitions(self.partitions, workers, index)]
        if legacy if legacy is not None else index == 0:
            out.append(self.topics.all_device_telemetry())
        return out


def shared(topic_filter: str, group: str) -> str:
    """``topic_filter`` as an MQTT 5 shared subscription of ``group``."""
    return f"$share/{check_segment(group, 'share group')}/{topic_filter}"


def partition_topic(topics: Topics, device_id: str, partition: int) -> str:
    return f"{topics.device_telemetry(device_id)}/{int(partition)}"


def parse_telemetry_topic(topics: Topics, topic: str) -> tuple[str, int | None]:
    """``(device id, partition)`` of a telemetry topic of this fleet (partition None: unpartitioned);
    :class:`ProtocolError` for anything else."""
    prefix = topics.all_device_telemetry().partition("+")[0]  # <root>/<fleet>/devices/
    rest = topic[len(prefix) :].split("/") if topic.startswith(prefix) else []
    if len(rest) == 2 and rest[1] == "telemetry":
        return check_unit(rest[0]), None
    if len(rest) == 3 and rest[1] == "telemetry" and _canonical(rest[2]):
        part = int(rest[2])
        if part < MAX_PARTITIONS:
            return check_unit(rest[0]), part
    raise ProtocolError(f"{topic!r} is not a telemetry topic of fleet {topics.fleet!r}")


def _canonical(text: str) -> bool:
    return 0 < len(text) <= 4 and text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")
