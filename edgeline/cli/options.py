"""Options and helpers shared by every command that talks to a registry or a broker: ``registry``,
``deploy``, ``rollout``, ``rollback``, ``fleet``, ``ingest``, ``drift`` and ``retrain``.

* :func:`registry_options`: ``--home``, ``--store`` (SQLite or PostgreSQL URL), ``--artifacts``.
* :func:`broker_options`: the fleet broker (``--broker-host``, ``--broker-port``, ``--protocol``), its
  TLS (``--ca-file``, ``--cert-file``, ``--key-file``), credentials (``--username``,
  ``--password-file``) and the topics (``--topic-root``, ``--fleet``), as one :class:`BrokerOptions`.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from cloud_registry.errors import RegistryError
from cloud_registry.registry import Registry, RegistryPaths
from edge_agent.errors import EdgelineError
from edgeline.core.mqtt_link import LinkSettings, MqttLink, TlsSettings
from edgeline.core.protocol.topics import Topics

F = TypeVar("F", bound=Callable[..., Any])


def registry_options(fn: F) -> F:
    """--home, --store, --artifacts."""
    fn = click.option(
        "--artifacts",
        "artifacts_url",
        envvar="EDGELINE_ARTIFACTS",
        default=None,
        help="Artifact store URL (default file://HOME/artifacts; env EDGELINE_ARTIFACTS).",
    )(fn)
    fn = click.option(
        "--store",
        "store_url",
        envvar="EDGELINE_REGISTRY",
        default=None,
        help="Registry URL: sqlite:///path.db or postgresql://user@host/db "
        "(default sqlite:///HOME/registry.db; env EDGELINE_REGISTRY).",
    )(fn)
    fn = click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="EDGELINE_HOME",
        default=Path(".edgeline"),
        show_default=True,
        help="edgeline home directory (env EDGELINE_HOME).",
    )(fn)
    return fn


@dataclass(frozen=True)
class BrokerOptions:
    host: str
    port: int
    protocol: str
    topic_root: str
    fleet: str
    username: str | None
    password_file: Path | None
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_root, self.fleet)

    def link_settings(self, client_id: str, **overrides: Any) -> LinkSettings:
        """Settings for an MQTT link to this broker: TLS when a CA is given, the password read from
        its file. ``overrides`` set other :class:`LinkSettings` fields (e.g. ``clean_start``)."""
        password = None
        if self.password_file is not None:
            try:
                password = self.password_file.read_text("utf-8").strip()
            except OSError as exc:
                raise click.ClickException(f"cannot read {self.password_file}: {exc.strerror}") from exc
        tls = None
        if self.ca_file is not None:
            tls = TlsSettings(
                str(self.ca_file),
                str(self.cert_file) if self.cert_file else None,
                str(self.key_file) if self.key_file else None,
            )
        elif self.cert_file is not None or self.key_file is not None:
            raise click.ClickException("--cert-file/--key-file need --ca-file (TLS)")
        return LinkSettings(
            host=self.host,
            port=self.port,
            client_id=client_id,
            username=self.username,
            password=password,
            tls=tls,
            protocol="5" if self.protocol == "5" else "3.1.1",
            **overrides,
        )


def broker_options(fn: F) -> F:
    """Fleet broker connection options, collected into ``broker: BrokerOptions``."""
    opts = [
        click.option(
            "--broker-host",
            "host",
            envvar="EDGELINE_BROKER_HOST",
            default="127.0.0.1",
            show_default=True,
            help="Fleet broker host (env EDGELINE_BROKER_HOST).",
        ),
        click.option(
            "--broker-port",
            "port",
            envvar="EDGELINE_BROKER_PORT",
            type=click.IntRange(1, 65535),
            default=1883,
            show_default=True,
            help="Fleet broker port (env EDGELINE_BROKER_PORT).",
        ),
        click.option(
            "--protocol",
            type=click.Choice(["5", "3.1.1"]),
            default="5",
            show_default=True,
            help="MQTT protocol version.",
        ),
        click.option("--topic-root", default="edgeline", show_default=True, help="Topic root."),
        click.option("--fleet", "fleet_name", default="default", show_default=True, help="Fleet name in topics."),
        click.option("--username", default=None, help="Broker user name."),
        click.option("--password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None),
        click.option(
            "--ca-file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            default=None,
            help="CA certificate: connect with TLS.",
        ),
        click.option("--cert-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None),
        click.option("--key-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None),
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        kw["broker"] = BrokerOptions(
            kw.pop("host"),
            kw.pop("port"),
            kw.pop("protocol"),
            kw.pop("topic_root"),
            kw.pop("fleet_name"),
            kw.pop("username"),
            kw.pop("password_file"),
            kw.pop("ca_file"),
            kw.pop("cert_file"),
            kw.pop("key_file"),
        )
        return fn(*args, **kw)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper  # type: ignore[return-value]


def keys_option(fn: F) -> F:
    return click.option(
        "--keys",
        "keys_dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="EDGELINE_KEYS",
        default=Path("keys"),
        show_default=True,
        help="Key directory with the signing key (env EDGELINE_KEYS).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")(fn)


@contextmanager
def optional_registry(home: Path, store_url: str | None, artifacts_url: str | None) -> Iterator[Registry | None]:
    """The registry at ``--store``/``--artifacts``, or under HOME; None when neither URL is given and
    HOME holds no registry yet (commands that can work without one: ``drift``, ``ingest``)."""
    if store_url is None and not (Path(home) / "registry.db").exists():
        yield None
        return
    with open_registry(home, store_url, artifacts_url) as reg:
        yield reg


@contextmanager
def open_registry(home: Path, store_url: str | None, artifacts_url: str | None) -> Iterator[Registry]:
    paths = RegistryPaths(home)
    try:
        reg = Registry.open(store_url or paths.store_url, artifacts_url or paths.artifacts_url)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield reg
    finally:
        reg.close()


def connect(broker: BrokerOptions, client_id: str, timeout: float = 10.0) -> MqttLink:
    try:  # fail fast with a clear message when nothing listens there
        socket.create_connection((broker.host, broker.port), timeout=min(timeout, 5.0)).close()
    except OSError as exc:
        raise click.ClickException(f"fleet broker {broker.host}:{broker.port} is not reachable: {exc}") from exc
    link = MqttLink(broker.link_settings(client_id, clean_start=True))
    try:
        link.connect(timeout)
    except EdgelineError as exc:
        link.stop()
        raise click.ClickException(f"fleet broker: {exc}") from exc
    return link


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))
