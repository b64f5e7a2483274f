"""Each station of a device connects to the locked-down broker as itself (docs/stations.md): its own
certificate or password for the identity ``<device>~<station>``, listed in the broker spec as a
device. On a real Mosquitto rendered from the spec, with password and with mTLS authentication: two
stations of one device are connected at once (the broker pins each client id to its identity, so
neither takes the other's session), each writes its own topics and is refused on its sibling's and
on its device's."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_registry.security.broker_config import acl_rules
from cloud_registry.security.passwords import generate_password
from cloud_registry.security.pki import Pki
from edge_agent.errors import TransportError
from tests.security.conftest import DEVICES, REGISTRY, TOPICS, Inbox, _teardown, make_spec, prime, start_locked

STATIONS = {"cell~a": ["line-1"], "cell~b": ["line-1"]}


@pytest.mark.broker
@pytest.mark.parametrize("auth", ["password", "mtls"])
def test_each_station_is_its_own_identity_on_the_locked_broker(
    auth: str, pki: Pki, passwords: dict[str, str], tmp_path: Path
) -> None:
    for unit in STATIONS:
        pki.issue("device", unit)
    pw = {**passwords, **{unit: generate_password() for unit in STATIONS}}
    spec = make_spec(auth, pki, tmp_path, devices={**DEVICES, **STATIONS})
    assert (("write", TOPICS.device_state("cell~a"))) in acl_rules(spec)["cell~a"]
    env = start_locked(auth, pki, pw, tmp_path, spec=spec)
    try:
        registry = env.connect(REGISTRY)
        inbox = Inbox()
        registry.subscribe(TOPICS.all_device_states(), inbox)
        a, b = env.connect("cell~a"), env.connect("cell~b")
        prime(inbox, a, TOPICS.device_state("cell~a"))
        prime(inbox, b, TOPICS.device_state("cell~b"))
        assert a.connected and b.connected and a.stats.disconnects == 0 and b.stats.disconnects == 0
        for topic in (TOPICS.device_state("cell~b"), TOPICS.device_telemetry("cell~b"), TOPICS.device_state("cell")):
            with pytest.raises(TransportError, match="refused"):  # MQTT 5: PUBACK 0x87 Not authorized
                a.publish_sync(topic, b'{"forged": true}')
        assert not [t for t in inbox.topics() if t.endswith("/cell/state")]
    finally:
        _teardown(env)
