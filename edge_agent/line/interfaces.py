"""The line's interfaces of one agent, built from ``[line.*]``: each is a server on its own asyncio
loop thread and an outlet of the result bus (a :class:`~edge_agent.sinks.base.SinkWorker` with its own
bounded queue), so all get the same records from the one publish path, and none can slow inspection."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from edge_agent.secret_file import read_secret
from edge_agent.sinks.base import SinkWorker

log = logging.getLogger(__name__)


class Server(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class LineInterfaces:
    def __init__(self, agent: Any) -> None:
        cfg = agent.config.line
        self.servers: list[Server] = []
        self.workers: list[SinkWorker] = []
        submit = agent.trigger
        #: operator feedback (``[feedback]``), taken by every interface that has a way for it
        feedback = getattr(agent, "feedback", None)

        def status() -> str:
            return str(agent.state.value)

        if cfg.tcp is not None and cfg.tcp.enabled:
            from edge_agent.line.tcp_line import TcpLineServer

            self._add(agent, TcpLineServer(cfg.tcp, submit, feedback), cfg.tcp.queue_size)
        if cfg.modbus is not None and cfg.modbus.enabled:
            from edge_agent.line.modbus_server import ModbusLineServer

            self._add(agent, ModbusLineServer(cfg.modbus, submit, status, feedback), cfg.modbus.queue_size)
        if cfg.opcua is not None and cfg.opcua.enabled:
            from edge_agent.line.opcua_server import OpcuaLineServer

            self._add(agent, OpcuaLineServer(cfg.opcua, submit, status, agent), cfg.opcua.queue_size)
        if cfg.mqtt is not None and cfg.mqtt.enabled:
            from edge_agent.line.mqtt_line import MqttLineServer

            password = read_secret(cfg.mqtt.password_file, "line.mqtt.password_file")
            self._add(agent, MqttLineServer(cfg.mqtt, agent.device_id, submit, password, feedback), cfg.mqtt.queue_size)

    def _add(self, agent: Any, server: Server, queue_size: int) -> None:
        self.servers.append(server)
        self.workers.append(SinkWorker(server, queue_size=queue_size, include="all", events=False))

    def by_name(self, name: str) -> Any:
        return next(s for s in self.servers if s.name == name)

    def start(self) -> None:
        """Start the servers, then their outlets. A server that cannot start fails the start (a line
        that expects the PLC interface must not run without it)."""
        started: list[Server] = []
        try:
            for s in self.servers:
                s.start()
                started.append(s)
        except Exception:
            for s in started:
                s.stop()
            raise
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        for w in self.workers:
            w.close(timeout=2.0)
        for s in self.servers:
            try:
                s.stop()
            except Exception:
                log.exception("stopping %s failed", s.name)

    def stats(self) -> dict[str, Any]:
        return {s.name: {**s.stats(), **w.stats()} for s, w in zip(self.servers, self.workers, strict=True)}
