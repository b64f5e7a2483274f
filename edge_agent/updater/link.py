"""What the updater needs from the device's cloud connection (``CloudLink`` provides it), and the
trust store with the revocations the device has accepted so far."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge_agent.errors import ProtocolError
from edge_agent.revocation_file import apply_revocation_file
from edge_agent.updater.slots import SlotDisk
from edgeline.core.protocol.canonical import parse_json
from edgeline.core.protocol.delivery import DeviceState
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.topics import Topics

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, bool], None]


class UpdaterLink(Protocol):
    @property
    def topics(self) -> Topics: ...

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None: ...
    def unsubscribe(self, topic_filter: str) -> None: ...
    def subscribe_many(self, topic_filters: list[str], handler: MessageHandler, qos: int = 1) -> None: ...
    def unsubscribe_many(self, topic_filters: list[str]) -> None: ...
    def on_disconnect(self, listener: Callable[[], None]) -> None: ...
    def subscribe_desired(self, handler: MessageHandler) -> None: ...
    def subscribe_revocations(self, handler: MessageHandler) -> None: ...
    def update_state(self, **changes: Any) -> DeviceState: ...


def load_trust(trust_file: Path, disk: SlotDisk) -> TrustStore:
    """The configured trust store plus the newest revocation list accepted from the fleet."""
    store = TrustStore.load(trust_file)
    apply_revocation_file(store, disk.revocations_path)
    return store


def parse_revocations(payload: bytes) -> dict[str, Any]:
    data = parse_json(payload, max_bytes=1024 * 1024)
    if not isinstance(data, dict):
        raise ProtocolError("revocation list is not a JSON object")
    return data
