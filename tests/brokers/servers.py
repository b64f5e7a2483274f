"""Real brokers of the tests' own: a 3-node nats-server cluster (MQTT over JetStream) and a
RabbitMQ node with the MQTT plugin. Each on free loopback ports with its own store, log and
config directories; the system's NATS (4222) and RabbitMQ (5672/25672) are never touched."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.demo.broker import free_port, wait_port


def _collect(into: list[bytes]) -> Callable[[str, bytes, bool], None]:
    return lambda _t, payload, _r: into.append(payload)


def _probe(port: int, timeout: float) -> bool:
    """A 3.1.1 client can connect, subscribe and get its own retained message back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        link = MqttLink(LinkSettings(port=port, client_id=f"probe-{port}", protocol="3.1.1", clean_start=True))
        got: list[bytes] = []
        try:
            link.connect(3.0)
            link.publish_sync("edgeline-probe/ready", b"1", 1, True, 3.0)
            link.subscribe("edgeline-probe/ready", _collect(got))
            end = time.monotonic() + 3.0
            while not got and time.monotonic() < end:
                time.sleep(0.05)
            if got:
                link.publish_sync("edgeline-probe/ready", b"", 1, True, 3.0)
                return True
        except Exception:  # not ready yet (JetStream electing its leader): try again
            pass
        finally:
            link.stop()
        time.sleep(0.3)
    return False


def _port_not_in(taken: set[int]) -> int:
    while True:
        port = free_port()
        if port not in taken:
            return port


def _kill_group(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class NatsNode:
    name: str
    mqtt_port: int
    client_port: int
    cluster_port: int
    store: Path
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["nats-server", "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        _kill_group(self.proc)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class NatsCluster:
    """``size`` nats-server nodes routed to each other, JetStream and MQTT on each."""

    root: Path
    size: int = 3
    nodes: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        unique: list[int] = []
        while len(unique) < 3 * self.size:  # a port freed by one call can come back from the next
            port = free_port()
            if port not in unique:
                unique.append(port)
        ports = [tuple(unique[i : i + 3]) for i in range(0, len(unique), 3)]
        for i, (mqtt, client, cluster) in enumerate(ports):
            name = f"n{i + 1}"
            d = self.root / name
            d.mkdir(parents=True, exist_ok=True)
            node = NatsNode(name, mqtt, client, cluster, d / "store", d / "nats.conf", d / "nats.log")
            routes = ", ".join(f"nats-route://127.0.0.1:{c}" for j, (_, _, c) in enumerate(ports) if j != i)
            # explicit: otherwise the MQTT streams get as many replicas as nodes are routed at the first
            # MQTT connect (2 of 3 seen here), and an R2 session stream stalls when one of its nodes dies
            replicas = f"  stream_replicas: {self.size}\n  consumer_replicas: {self.size}\n" if self.size > 1 else ""
            cluster_block = (
                f'cluster {{\n  name: "edgeline-test"\n  listen: "127.0.0.1:{cluster}"\n  routes: [{routes}]\n}}\n'
                if self.size > 1
                else ""
            )
            node.config.write_text(
                f'server_name: "{name}"\nlisten: "127.0.0.1:{client}"\n'
                f'jetstream {{\n  store_dir: "{node.store}"\n  max_memory_store: 64MB\n  max_file_store: 256MB\n}}\n'
                f'mqtt {{\n  listen: "127.0.0.1:{mqtt}"\n{replicas}}}\n' + cluster_block,
                "utf-8",
            )
            self.nodes.append(node)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.mqtt_port) for n in self.nodes]

    def start(self, timeout: float = 60.0) -> None:
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            if not wait_port("127.0.0.1", n.mqtt_port, timeout):
                raise RuntimeError(f"nats {n.name} never listened:\n{self.log_tail()}")
        for n in self.nodes:
            if not _probe(n.mqtt_port, timeout):
                raise RuntimeError(f"nats {n.name} never served MQTT:\n{self.log_tail()}")

    def node_of(self, port: int) -> NatsNode:
        return next(n for n in self.nodes if n.mqtt_port == port)

    def restart(self, node: NatsNode, timeout: float = 60.0) -> None:
        node.start()
        if not wait_port("127.0.0.1", node.mqtt_port, timeout) or not _probe(node.mqtt_port, timeout):
            raise RuntimeError(f"nats {node.name} did not come back:\n{self.log_tail()}")

    def stop(self) -> None:
        for n in self.nodes:
            n.kill()

    def log_tail(self) -> str:
        return "\n".join(f"--- {n.name}\n" + n.log.read_text("utf-8", "replace")[-1500:] for n in self.nodes)


def find_rabbitmq() -> Path | None:
    """The RabbitMQ server script that runs as the calling user (the Debian wrapper in /usr/sbin
    switches to the rabbitmq user, who cannot write the test's directories)."""
    for base in sorted(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*"), reverse=True):
        script = base / "sbin" / "rabbitmq-server"
        if script.exists():
            return script
    return None


@dataclass
class RabbitNode:
    """A RabbitMQ node of its own (node name, AMQP/dist/MQTT ports, Mnesia, logs, plugins file)."""

    root: Path
    mqtt_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.mqtt_port = self.mqtt_port or free_port()
        self.amqp_port = _port_not_in({self.mqtt_port})
        self.dist_port = _port_not_in({self.mqtt_port, self.amqp_port})
        self.name = f"edgeline-test-{os.getpid()}-{self.mqtt_port}@localhost"
        for d in ("home", "mnesia", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "enabled_plugins").write_text("[rabbitmq_mqtt].\n", "utf-8")
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}\n"
            "mqtt.allow_anonymous = true\nloopback_users = none\n",
            "utf-8",
        )

    @property
    def env(self) -> dict[str, str]:
        r = self.root
        return {
            **os.environ,
            "HOME": str(r / "home"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(r / "mnesia"),
            "RABBITMQ_LOG_BASE": str(r / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(r / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(r / "rabbitmq.conf"),
            "RABBITMQ_PID_FILE": str(r / "rabbit.pid"),
        }

    def start(self, timeout: float = 90.0) -> None:
        script = find_rabbitmq()
        if script is None:
            raise RuntimeError("rabbitmq-server is not installed")
        with (self.root / "server.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [str(script)], env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        if not wait_port("127.0.0.1", self.mqtt_port, timeout) or not _probe(self.mqtt_port, 30.0):
            tail = (self.root / "server.log").read_text("utf-8", "replace")[-2000:]
            self.stop()
            raise RuntimeError(f"rabbitmq never served MQTT on {self.mqtt_port}:\n{tail}")

    def stop(self) -> None:
        _kill_group(self.proc, signal.SIGTERM)


def have(binary: str) -> bool:
    return shutil.which(binary) is not None
