"""Fixtures for the locked-down broker: a test CA with broker, registry, observer and device certificates,
another CA for impersonation attempts, device passwords, and real Mosquitto brokers rendered from a spec
(password or mTLS authentication) on free ports."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloud_registry.security.broker_config import BrokerSpec
from cloud_registry.security.passwords import PasswordFile, generate_password
from cloud_registry.security.pki import Pki
from edge_agent.errors import TransportError
from edgeline.core.mqtt_link import LinkSettings, MqttLink, wait_until
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker, find_mosquitto
from edgeline.demo.lockdown import client_settings, local_spec, locked_broker
from tests.delivery.conftest import bundles, cloud, frames  # noqa: F401  (hostile deployments to a real device)

DEVICES = {"dev-a": ["line-1"], "dev-b": ["line-2"]}
REGISTRY = "registry"
OBSERVER = "ingest"
STRANGER = "dev-z"  # a device the CA knows but the broker spec does not list
TOPICS = Topics("edgeline", "plant1")


@pytest.fixture(scope="session")
def pki_master(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki.init(tmp_path_factory.mktemp("pki"))
    pki.issue("server", "broker", hosts=["127.0.0.1", "localhost"])
    for dev in [*DEVICES, STRANGER]:
        pki.issue("device", dev)
    pki.issue("registry", REGISTRY)
    pki.issue("observer", OBSERVER)
    return pki


@pytest.fixture
def pki(pki_master: Pki, tmp_path: Path) -> Pki:
    """A per-test copy of the CA (tests revoke certificates in it)."""
    dst = tmp_path / "pki"
    shutil.copytree(pki_master.directory, dst)
    return Pki(dst)


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA that mints certificates with the very same names: an impersonation attempt."""
    pki = Pki.init(tmp_path_factory.mktemp("other-pki"), common_name="rogue CA")
    pki.issue("server", "broker", hosts=["127.0.0.1", "localhost"])
    pki.issue("device", "dev-a")
    pki.issue("registry", REGISTRY)
    return pki


@pytest.fixture(scope="session")
def passwords() -> dict[str, str]:
    return {name: generate_password() for name in [*DEVICES, REGISTRY, OBSERVER]}


def make_spec(auth: str, pki: Pki, workdir: Path, *, devices: dict[str, list[str]] | None = None) -> BrokerSpec:
    devs = DEVICES if devices is None else devices
    return local_spec(auth, pki, workdir, topics=TOPICS, devices=devs, registry=[REGISTRY], observers=[OBSERVER])


@dataclass
class Locked:
    """A running locked-down broker and a way to connect to it as any identity."""

    broker: MosquittoBroker
    spec: BrokerSpec
    pki: Pki
    passwords: dict[str, str]
    workdir: Path
    links: list[MqttLink] = field(default_factory=list)

    @property
    def auth(self) -> str:
        return self.spec.auth

    def settings(self, identity: str, **overrides: object) -> LinkSettings:
        password = overrides.pop("password", self.passwords.get(identity))
        base = client_settings(
            self.spec, identity, pki=self.pki, password=str(password) if self.auth == "password" else None
        )
        if self.auth == "password":
            overrides["password"] = password
        return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]

    def link(self, settings: LinkSettings) -> MqttLink:
        link = MqttLink(settings)
        self.links.append(link)
        return link

    def connect(self, identity: str, **overrides: object) -> MqttLink:
        link = self.link(self.settings(identity, **overrides))
        link.connect(timeout=10.0)
        return link


_REFUSAL_MARKS = ("openssl error", "failed:", "protocol error", "not authorised")


def _log(env: Locked) -> str:
    try:
        return env.broker.log_path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _refusals_logged(env: Locked) -> int:
    text = _log(env).lower()
    return sum(text.count(m) for m in _REFUSAL_MARKS)


def assert_refused(env: Locked, link: MqttLink) -> str:
    """The broker (or the TLS handshake) refuses: connect raises TransportError, connected stays false.
    Returns what the broker logged meanwhile, so a test can check the reason.

    A CONNACK refusal reaches the client; a failed TLS handshake has no CONNACK, so the broker's log line
    for the failed connection tells when the attempt is over."""
    before_text = _log(env)
    before = _refusals_logged(env)
    link.start()
    wait_until(lambda: link.stats.refused > 0 or link.connected or _refusals_logged(env) > before, 10)
    with pytest.raises(TransportError, match="not connected"):
        link.connect(timeout=0.3)
    assert not link.connected
    assert link.stats.connects == 0
    # paho sleeps up to a second between reconnect attempts: stop this link in the background
    env.links.remove(link)
    threading.Thread(target=link.stop, daemon=True).start()
    return _log(env)[len(before_text) :]


def start_locked(
    auth: str, pki: Pki, passwords: dict[str, str], workdir: Path, *, spec: BrokerSpec | None = None
) -> Locked:
    """A started broker from ``spec`` (default :func:`make_spec`), with ``passwords`` in its password file."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run .ci/run, or apt-get install -y mosquitto")
    spec = spec or make_spec(auth, pki, workdir)
    if auth == "password":
        pwfile = PasswordFile(Path(str(spec.password_file)))
        for name, pw in passwords.items():
            pwfile.set(name, pw, iterations=1000)
    broker = locked_broker(spec, workdir / "mosquitto")
    broker.start()
    return Locked(broker, spec, pki, passwords, workdir)


@pytest.fixture(params=["password", "mtls"])
def locked(request: pytest.FixtureRequest, pki: Pki, passwords: dict[str, str], tmp_path: Path) -> Iterator[Locked]:
    """A real Mosquitto rendered from the spec, once with password and once with mTLS authentication."""
    env = start_locked(str(request.param), pki, passwords, tmp_path)
    try:
        yield env
    finally:
        _teardown(env)


@pytest.fixture
def locked_factory(pki: Pki, passwords: dict[str, str], tmp_path: Path) -> Iterator[Callable[[str], Locked]]:
    started: list[Locked] = []

    def make(auth: str) -> Locked:
        env = start_locked(auth, pki, passwords, tmp_path / auth)
        started.append(env)
        return env

    yield make
    for env in started:
        _teardown(env)


def _teardown(env: Locked) -> None:
    for link in env.links:
        link.stop()
    env.broker.kill()


class Inbox:
    """Collects (topic, payload) from a subscription handler; safe to read from the test thread."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes, retained: bool) -> None:
        self.items.append((topic, payload))

    def topics(self) -> list[str]:
        return [t for t, _ in list(self.items)]

    def wait_for(self, topic: str, timeout: float = 10.0) -> bool:
        return wait_until(lambda: topic in self.topics(), timeout)


def prime(inbox: Inbox, publisher: MqttLink, topic: str, timeout: float = 10.0) -> None:
    """Publish probes on ``topic`` until ``inbox`` receives one: proves that the subscriber's subscriptions
    (all sent before the one matching ``topic``) are active, so a later absence means something."""
    n = 0

    def arrived() -> bool:
        nonlocal n
        if topic in inbox.topics():
            return True
        n += 1
        publisher.publish_sync(topic, f"probe {n}".encode())
        return wait_until(lambda: topic in inbox.topics(), 0.2)

    assert wait_until(arrived, timeout, interval=0.0), f"subscription never became active for {topic}"
    inbox.items.clear()
