"""The worker both receivers of signed config documents share: the agent's remote-config plugin
(:mod:`.plugin`) and the station supervisor's layout link (:mod:`edge_agent.stations.layout_remote`).

MQTT handlers only queue what arrives (:meth:`DocumentWorker._on_message`); one thread takes each
message in turn (:meth:`DocumentWorker._handle`), judges a trial under way every ``TICK_S``
(:meth:`DocumentWorker._tick`), publishes the retained config state at every connect, keeps the
documents that came during a trial for after it, and saves the record after every step. An error in
a step is logged, never raised into the agent or the supervisor.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import EdgelineError, TransportError
from edge_agent.remote_config.errors import ConfigRefused
from edge_agent.remote_config.store import ConfigRecord, ConfigStore
from edge_agent.remote_config.verify import check_version, verify_document
from edgeline.core.protocol.remote_config import ConfigDocument, ConfigReason, ConfigState, parse_config_payload
from edgeline.core.protocol.signing import Envelope, TrustStore

log = logging.getLogger(__name__)

#: while a trial runs, judge it this often (seconds)
TICK_S = 0.2
#: documents kept while a trial runs (a device's and its groups' retained documents at a reconnect)
MAX_HELD = 8


@dataclass(frozen=True)
class Message:
    payload: bytes
    retained: bool


class Publish:
    """Publish the config state (at every connect)."""


def envelope_of(payload: bytes) -> Envelope | None:
    """The signed envelope of a config topic's payload (None: an empty, cleared topic); a payload
    that is no envelope is refused as ``bad_document``."""
    try:
        return parse_config_payload(payload)
    except EdgelineError as exc:
        raise ConfigRefused(ConfigReason.BAD_DOCUMENT, str(exc)) from exc


class DocumentWorker:
    """Queue, thread, record and state of a config-document receiver, and the checks every document
    goes through (:meth:`_handle`). Subclasses set ``me`` (an identity with ``device_id`` and
    ``groups``) and ``trust``, give :meth:`_state_link`, and implement :meth:`_prepare`,
    :meth:`_apply`, :meth:`_refuse` and :meth:`_tick`; ``_trial`` is not None while a document is on
    trial."""

    #: what the logs call this receiver
    label = "remote config"
    me: Any
    trust: TrustStore

    def __init__(
        self,
        store: ConfigStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        fresh_start: str = "starting from the device's own file",
    ) -> None:
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        try:
            self.rec = store.load()
        except EdgelineError as exc:
            log.error("%s; %s", exc, fresh_start)
            self.rec = ConfigRecord()
        self._trial: Any = None
        #: documents that came during a trial, tried after it (the newest few)
        self._held: list[Message] = []
        self._q: queue.Queue[Message | Publish | None] = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    # -- what a subclass gives ------------------------------------------------------------------------
    def _state_link(self) -> tuple[Any, str]:
        """The link the config state is published on, and its topic."""
        raise NotImplementedError

    def _prepare(self, doc: ConfigDocument) -> Any:
        """Check a verified document against this receiver's rules; raises :class:`ConfigRefused`."""
        raise NotImplementedError

    def _apply(self, prepared: Any, env: Envelope, now: float, key: str) -> None:
        raise NotImplementedError

    def _refuse(self, key: str, r: ConfigRefused, retained: bool) -> None:
        raise NotImplementedError

    def _tick(self) -> None:
        raise NotImplementedError

    def _on_trial(self) -> bool:
        """A document is on trial: another one waits for its end."""
        return self.rec.trial is not None

    # -- a document -----------------------------------------------------------------------------------
    def _handle(self, msg: Message) -> None:
        key = hashlib.sha256(msg.payload).hexdigest()
        now = self.clock()
        try:
            env = envelope_of(msg.payload)
            if env is None:
                return  # the push was cleared: keep what runs
            # expiry aside first: the document this device runs comes again at every reconnect, and
            # still counts after its signing key or its own validity ran out
            doc = verify_document(env, self.trust, self.me, now, check_expiry=False)
            if any(a is not None and a.version == doc.version for a in (self.rec.committed, self.rec.trial)):
                return  # the same document again (retained, at a reconnect)
            if msg.retained and doc.version <= self.rec.floor:  # a stale retained copy (a group's older one)
                log.debug("ignoring retained config version %d (floor %d)", doc.version, self.rec.floor)
                return
            if self._on_trial():
                self._hold(msg)  # tried after the current trial
                return
            verify_document(env, self.trust, self.me, now)
            check_version(doc, self.rec.floor)
            prepared = self._prepare(doc)
        except ConfigRefused as r:
            self._refuse(key, r, msg.retained)
            return
        self._apply(prepared, env, now, key)

    # -- the thread -----------------------------------------------------------------------------------
    def _start_worker(self, name: str) -> None:
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def _stop_worker(self, timeout: float) -> None:
        self._stop.set()
        self._q.put(None)
        if self._worker is not None:
            self._worker.join(timeout)

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        self._q.put(Message(payload, retained))

    def _on_connect(self, _session_present: bool) -> None:
        self._q.put(Publish())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._q.get(timeout=TICK_S if self._trial is not None else None)
            except queue.Empty:
                item = None  # a tick
            try:
                if isinstance(item, Message):
                    self._handle(item)
                elif isinstance(item, Publish):
                    self._publish_state()
                elif item is None and self._stop.is_set():
                    return
                self._tick()
            except Exception:  # a config document must never take the agent or the supervisor down
                log.exception("%s step failed", self.label)

    def _hold(self, msg: Message) -> None:
        """Keep a document that came during a trial (the newest :data:`MAX_HELD`)."""
        self._held = [*self._held, msg][-MAX_HELD:]

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for msg in held:
            self._q.put(msg)

    # -- record and state -----------------------------------------------------------------------------
    def state(self) -> ConfigState:
        rec, c = self.rec, self.rec.committed
        return ConfigState(
            device_id=self.me.device_id,
            ts=self.clock(),
            version=c.version if c else 0,
            trial=rec.trial.version if rec.trial else None,
            applied_at=c.at if c else None,
            changed=c.changed if c else (),
            last_refusal=rec.last_refusal,
            last_rollback=rec.last_rollback,
        )

    def _publish_state(self) -> None:
        link, topic = self._state_link()
        if not link.connected:
            return
        try:
            link.publish(topic, self.state().to_bytes(), 1, True)
        except TransportError as exc:
            log.debug("config state not published: %s", exc)

    def _save(self) -> None:
        try:
            self.store.save(self.rec)
        except OSError as exc:
            log.error("%s record not saved: %s", self.label, exc)
