"""The OPC UA server against the asyncua client with security on (user/password over Basic256Sha256
Sign&Encrypt): browse, read the result variables, call the trigger, receive the result event; clients
refused (wrong password, anonymous, no encryption) and a client that never reads do not affect the
results a good client gets."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from edge_agent.line.opcua_certs import make_certificate
from edge_agent.line.opcua_server import RESULT_VARS
from edge_agent.line.opcua_users import hash_password
from tests.line.conftest import MakeAgent, free_port

NS = "urn:edgeline:line"
CLIENT_URI = "urn:edgeline:test:plc"


@pytest.fixture
def opcua_agent(make_agent: MakeAgent, tmp_path: Path) -> tuple[Any, str, Path]:
    users = tmp_path / "users.txt"
    users.write_text(f"# line users\nmes:{hash_password('s3cret', iterations=1000)}\nplc:plain-pw\n")
    port = free_port()
    agent = make_agent({"opcua": {"port": port, "users_file": str(users), "pki_dir": str(tmp_path / "pki")}})
    crt, key = make_certificate(CLIENT_URI, "test plc")
    (tmp_path / "client.pem").write_bytes(crt)
    (tmp_path / "client-key.pem").write_bytes(key)
    return agent, f"opc.tcp://127.0.0.1:{port}/edgeline/", tmp_path


async def _client(
    url: str, tmp: Path, user: str | None = "mes", password: str = "s3cret", secure: bool = True
) -> Client:
    c = Client(url, timeout=5)
    c.application_uri = CLIENT_URI
    if secure:
        await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{tmp / 'client.pem'},{tmp / 'client-key.pem'}")
    if user is not None:
        c.set_user(user)
        c.set_password(password)
    return c


class Events:
    def __init__(self) -> None:
        self.got: list[Any] = []
        self.arrived = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        self.got.append(event)
        self.arrived.set()


def test_browse_trigger_event_and_read_with_security_on(opcua_agent: tuple[Any, str, Path]) -> None:
    agent, url, tmp = opcua_agent

    async def run() -> None:
        c = await _client(url, tmp)
        async with c:
            idx = await c.get_namespace_index(NS)
            vs = await c.nodes.objects.get_child(f"{idx}:VisionSystem")
            names = {(await n.read_browse_name()).Name for n in await vs.get_children()}
            assert {"Results", "Status", "Trigger"} <= names
            results = await vs.get_child(f"{idx}:Results")
            var_names = {(await n.read_browse_name()).Name for n in await results.get_children()}
            assert var_names == {n for n, _ in RESULT_VARS}
            etype = await c.nodes.base_event_type.get_child(f"{idx}:ResultReadyEventType")
            handler = Events()
            sub = await c.create_subscription(20, handler)
            await sub.subscribe_events(vs, etype)
            out = await vs.call_method(f"{idx}:Trigger", ua.Variant("P-77", ua.VariantType.String))
            trigger_id, part = out
            assert part == "P-77" and trigger_id >= 1
            await asyncio.wait_for(handler.arrived.wait(), 5.0)
            ev = handler.got[-1]
            assert ev.PartId == "P-77" and ev.ResultState == "ok" and ev.Verdict in ("ok", "defect")

            async def read(name: str) -> Any:
                return await (await results.get_child(f"{idx}:{name}")).read_value()

            assert await read("ResultId") == ev.ResultId
            assert await read("PartId") == "P-77" and await read("TriggerId") == trigger_id
            assert await read("Verdict") == ev.Verdict and await read("Class") == ev.Class
            assert 0.0 <= await read("Confidence") <= 1.0 and await read("ModelName") == "tiny"
            assert await read("ModelVersion") == 1 and await read("ResultCounter") == 1
            assert await read("TotalTimeMs") > 0 and "inspect_ms" in await read("ProcessingTimes")
            # the documented stable NodeIds: a PLC maps them once and calls without browsing
            stable = c.get_node(f"ns={idx};s=VisionSystem.Results.PartId")
            assert await stable.read_value() == "P-77"
            assert (await stable.read_browse_name()).Name == "PartId"
            # a part id is assigned when none is given
            method = ua.NodeId.from_string(f"ns={idx};s=VisionSystem.Trigger")
            _, assigned = await c.get_node(f"ns={idx};s=VisionSystem").call_method(
                method, ua.Variant("", ua.VariantType.String)
            )
            assert assigned.startswith("part-")
            # the result variables are read-only for clients
            with pytest.raises(ua.UaStatusCodeError):
                await (await results.get_child(f"{idx}:Verdict")).write_value(ua.Variant("ok", ua.VariantType.String))
            await sub.delete()

    asyncio.run(run())
    assert agent.counters()["line"]["triggers"]["opcua"] == 2


def test_refused_clients_and_a_silent_one_do_not_affect_the_results(opcua_agent: tuple[Any, str, Path]) -> None:
    agent, url, tmp = opcua_agent
    port = int(url.rsplit(":", 1)[1].split("/")[0])

    async def refused(**kw: Any) -> None:
        c = await _client(url, tmp, **kw)
        with pytest.raises(Exception):  # noqa: B017 - asyncua raises its status code errors or a timeout
            await c.connect()
        await c.disconnect()

    async def run() -> None:
        await refused(password="wrong")
        await refused(user="nobody", password="x")
        await refused(user=None)  # anonymous
        await refused(user="mes", password="s3cret", secure=False)  # no encryption offered
        silent = socket.create_connection(("127.0.0.1", port))  # connects, says nothing, reads nothing
        garbage = socket.create_connection(("127.0.0.1", port))
        garbage.sendall(b"HELF\xff\xff\xff\x7f" + b"\x00" * 64)
        try:
            c = await _client(url, tmp, user="plc", password="plain-pw")
            async with c:
                idx = await c.get_namespace_index(NS)
                vs = await c.nodes.objects.get_child(f"{idx}:VisionSystem")
                results = await vs.get_child(f"{idx}:Results")
                counter = await results.get_child(f"{idx}:ResultCounter")
                before = await counter.read_value()
                for i in range(5):
                    await vs.call_method(f"{idx}:Trigger", ua.Variant(f"Q-{i}", ua.VariantType.String))
                for _ in range(250):
                    if await counter.read_value() >= before + 5:
                        break
                    await asyncio.sleep(0.02)
                assert await counter.read_value() == before + 5
                assert await (await results.get_child(f"{idx}:PartId")).read_value() == "Q-4"
        finally:
            silent.close()
            garbage.close()

    asyncio.run(run())
    stats = agent.counters()["line"]
    assert stats["results"]["ok"] == 5
    # two wrong logins reach the user manager; anonymous and unencrypted are refused before it
    assert stats["interfaces"]["line-opcua"]["refused_logins"] == 2
