"""SUBACK bookkeeping, pure: which SUBSCRIBE asked for which filters, which the broker refused
(MQTT 3.1.1 return code 0x80, MQTT 5 reason code >= 0x80) or never answered, and when each refused
filter is asked for again (doubling from ``min_s`` up to ``max_s``).

A refused subscription is the quiet failure of a portable protocol: the broker says no (an ACL, a
topic it does not accept, a cluster node that cannot create the consumer in time) and nothing
arrives. The link logs it, counts it and retries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SubackStats:
    sent: int = 0  # SUBSCRIBE packets
    refused: int = 0  # filters refused in a SUBACK
    unanswered: int = 0  # filters whose SUBACK did not come within the timeout
    retried: int = 0  # filters sent again after a refusal
    last_refused: str = ""


@dataclass
class SubackBook:
    min_s: float = 0.5
    max_s: float = 10.0
    timeout_s: float = 10.0
    stats: SubackStats = field(default_factory=SubackStats)
    _pending: dict[int, tuple[float, list[str]]] = field(default_factory=dict)
    _retry: dict[str, tuple[float, float]] = field(default_factory=dict)  # filter -> (due, last delay)

    def sent(self, mid: int, filters: list[str], now: float) -> None:
        self.stats.sent += 1
        self._pending[mid] = (now, list(filters))

    def acked(self, mid: int, failed: list[bool], now: float) -> list[str]:
        """Record a SUBACK (``failed``: one flag per filter, in order); returns the refused filters,
        each scheduled for a retry. A granted filter clears its backoff."""
        entry = self._pending.pop(mid, None)
        if entry is None:
            return []
        _, filters = entry
        refused = [f for f, bad in zip(filters, failed, strict=False) if bad]
        for f, bad in zip(filters, failed, strict=False):
            if not bad:
                self._retry.pop(f, None)
        for f in refused:
            self._schedule(f, now)
        self.stats.refused += len(refused)
        if refused:
            self.stats.last_refused = refused[-1]
        return refused

    def expired(self, now: float) -> list[str]:
        """Filters whose SUBACK is overdue: counted and scheduled like a refusal."""
        late = [mid for mid, (at, _) in self._pending.items() if now - at > self.timeout_s]
        out: list[str] = []
        for mid in late:
            out.extend(self._pending.pop(mid)[1])
        for f in out:
            self._schedule(f, now)
        self.stats.unanswered += len(out)
        return out

    def _schedule(self, topic_filter: str, now: float) -> None:
        _, last = self._retry.get(topic_filter, (0.0, 0.0))
        delay = self.min_s if last <= 0 else min(self.max_s, last * 2)
        self._retry[topic_filter] = (now + delay, delay)

    def due(self, now: float) -> list[str]:
        """Filters whose retry time has come (their backoff is kept until a SUBACK grants them)."""
        out = [f for f, (at, _) in self._retry.items() if at <= now]
        for f in out:
            _, delay = self._retry[f]
            self._retry[f] = (float("inf"), delay)  # waiting for the SUBACK of the retry
        self.stats.retried += len(out)
        return out

    def forget(self, topic_filter: str) -> None:
        self._retry.pop(topic_filter, None)

    def reset(self) -> None:
        """A new connection: SUBACKs of the old one will never come (everything is re-sent)."""
        self._pending.clear()
        for f, (_, delay) in list(self._retry.items()):
            self._retry[f] = (float("inf"), delay)

    @property
    def waiting(self) -> int:
        return len(self._retry)

    @property
    def settled(self) -> bool:
        """No SUBACK awaited and no filter waiting for a retry: every subscription sent is granted."""
        return not self._pending and not self._retry
