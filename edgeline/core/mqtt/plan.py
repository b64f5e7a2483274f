"""Which broker to try next, with which MQTT version, after how long: pure, no sockets.

* **Versions.** With ``protocol="auto"`` an address is tried with MQTT 5 first. When the broker
  refuses it (CONNACK "unsupported protocol version") or never answers it (no CONNACK within the
  timeout, or the connection closed before one), the same address is tried once with 3.1.1 at once.
  What worked is remembered per address for the life of the process (every link shares it), so the
  cost is paid once. A forced ``"5"`` or ``"3.1.1"`` is used as given.
* **Addresses.** After a failure the next address is tried at once; only after a whole round of
  failures does the plan wait, doubling from ``min_s`` up to ``max_s``. A lost connection is retried
  on the same address first (a blip), then the round goes on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal

from edgeline.core.mqtt.settings import Protocol, format_address

log = logging.getLogger(__name__)

Version = Literal["5", "3.1.1"]
#: connected; CONNACK said "unsupported protocol version"; no CONNACK (timeout or closed first);
#: another CONNACK refusal; no TCP/TLS connection; connected, then lost
Outcome = Literal["connected", "version_refused", "no_connack", "refused", "unreachable", "lost"]

_memory: dict[tuple[str, int], Version] = {}
_memory_lock = threading.Lock()


def remembered(address: tuple[str, int]) -> Version | None:
    """The MQTT version that last worked for ``address`` in this process, if any."""
    with _memory_lock:
        return _memory.get(address)


def remember(address: tuple[str, int], version: Version | None) -> None:
    with _memory_lock:
        if version is None:
            _memory.pop(address, None)
        else:
            _memory[address] = version


@dataclass(frozen=True)
class Attempt:
    address: tuple[str, int]
    version: Version
    delay_s: float
    fallback: bool = False  # the 3.1.1 retry after MQTT 5 was refused or unanswered
    #: MQTT 5 to an address not known to speak it: a missing CONNACK means "try 3.1.1", so wait briefly
    probe: bool = False


class ConnectPlan:
    def __init__(
        self, addresses: list[tuple[str, int]], protocol: Protocol, min_s: float = 0.2, max_s: float = 10.0
    ) -> None:
        if not addresses:
            raise ValueError("no broker address")
        self.addresses = list(addresses)
        self.protocol = protocol
        self.min_s = max(0.05, min_s)
        self.max_s = max(self.min_s, max_s)
        self._index = 0
        self._failures = 0  # consecutive failed attempts on distinct addresses since the last success
        self._rounds = 0  # whole rounds failed since the last success
        self._fallback = False  # the next attempt is the 3.1.1 retry of the current address
        self._delay = 0.0

    @property
    def current(self) -> tuple[str, int]:
        return self.addresses[self._index]

    def _version(self, address: tuple[str, int]) -> Version:
        if self.protocol != "auto":
            return self.protocol
        return remembered(address) or "5"

    def next(self) -> Attempt:
        address = self.current
        if self._fallback:
            return Attempt(address, "3.1.1", 0.0, fallback=True)
        version = self._version(address)
        probe = self.protocol == "auto" and version == "5" and remembered(address) != "5"
        return Attempt(address, version, self._delay, probe=probe)

    def report(self, attempt: Attempt, outcome: Outcome) -> None:
        address = attempt.address
        if outcome == "connected":
            if self.protocol == "auto":
                remember(address, attempt.version)
            self._failures = self._rounds = 0
            self._fallback = False
            self._delay = 0.0
            return
        if outcome == "lost":
            self._fallback = False
            self._delay = self.min_s  # the same address once more, soon
            self._failures = 0
            return
        version_trouble = outcome in ("version_refused", "no_connack")
        if version_trouble and self.protocol == "auto" and attempt.version == "5":
            log.info(
                "broker %s %s MQTT 5; trying 3.1.1",
                format_address(address),
                "refused" if outcome == "version_refused" else "did not answer",
            )
            self._fallback = True
            return
        if attempt.fallback or (self.protocol == "auto" and remembered(address) == "3.1.1" and version_trouble):
            remember(address, None)  # neither worked now: ask again from 5 next round
        self._fallback = False
        self._failures += 1
        self._index = (self._index + 1) % len(self.addresses)
        if self._failures >= len(self.addresses):
            self._failures = 0
            self._rounds += 1
            self._delay = min(self.max_s, self.min_s * (2 ** (self._rounds - 1)))
        else:
            self._delay = 0.0
