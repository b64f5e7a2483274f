"""Shared fixtures: a real Mosquitto per test on a free port with its own config, key sets, and a real
tiny signed bundle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from converters.keys import KeyPaths, SigningKey, init_keys, load_signing_key
from edgeline.core.protocol.signing import TrustStore
from edgeline.demo.broker import MosquittoBroker, find_mosquitto

#: test directories whose every test starts a broker (or agent processes that need one) itself
_SERVICE_DIRS = {"demo", "faults"}
#: fixtures that start a real broker (Mosquitto; NATS and RabbitMQ in tests/brokers)
_BROKER_FIXTURES = {"mosquitto", "lazy_broker", "locked", "locked_factory", "acked"}
_BROKER_FIXTURES |= {"nats", "nats_cluster", "rabbit", "target"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", help="Run fault campaigns at their full counts.")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a broker ``broker``: those using a broker fixture (directly or
    through another fixture) and those of the service directories (a test that starts a broker some
    other way carries the mark itself); ``-m "not broker"`` is then the tier that runs with no
    service at all."""
    tests = Path(__file__).resolve().parent
    for item in items:
        try:
            top = Path(str(item.path)).resolve().relative_to(tests).parts[0]
        except (ValueError, IndexError):
            top = ""
        if _BROKER_FIXTURES & set(getattr(item, "fixturenames", ())) or top in _SERVICE_DIRS:
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def full_campaign(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--full"))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A real Mosquitto on a free port, its own config and persistence directory. Tests may stop,
    kill, restart or reconfigure it."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run .ci/run, or apt-get install -y mosquitto")
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    init_keys(d)
    return d


@pytest.fixture(scope="session")
def signing_key(key_dir: Path) -> SigningKey:
    return load_signing_key(key_dir)


@pytest.fixture
def trust(key_dir: Path) -> TrustStore:
    """A fresh trust store per test (tests may revoke keys in it)."""
    return TrustStore.load(KeyPaths(key_dir).trust)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> Path:
    """A real, signed, self-testing bundle (logistic regression on 32x32 pixels). Read-only: copy it
    before modifying."""
    from tests.factories import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny-v1", signing_key)
