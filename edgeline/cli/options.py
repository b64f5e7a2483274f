"""The option groups every command shares, one spelling each (checked by tests/test_cli_options.py).

* :func:`registry_options`: ``--home``, ``--store`` (SQLite or PostgreSQL URL), ``--artifacts``.
* :func:`broker_options`: the fleet broker (``--broker HOST:PORT``, repeated for the nodes of a cluster,
  or ``--broker-host``/``--broker-port``; ``--protocol``), its
  TLS (``--ca-file``, ``--cert-file``, ``--key-file``), credentials (``--username``,
  ``--password-file``) and the topics (``--topic-root``, ``--fleet``), as one :class:`BrokerOptions`.
* :func:`keys_option`: ``--keys DIR``, the key directory (env ``EDGELINE_KEYS``).
* :func:`json_option`: ``--json``, machine-readable output; errors then come as one JSON object too
  (:mod:`edgeline.cli.errors`).

Nothing here imports the cloud side or the learning libraries: the device's ``edgeline agent`` uses
these groups too.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from edgeline.cli.errors import JSON_META
from edgeline.core.errors import EdgelineError, TransportError
from edgeline.core.mqtt.settings import format_address, parse_address
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
    #: the other broker addresses (nodes of the same cluster), tried after host:port
    brokers: tuple[tuple[str, int], ...] = ()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(self.host, self.port), *(a for a in self.brokers if a != (self.host, self.port))]

    @property
    def where(self) -> str:
        return ", ".join(format_address(a) for a in self.addresses)

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
            brokers=tuple(self.addresses[1:]),
            client_id=client_id,
            username=self.username,
            password=password,
            tls=tls,
            protocol="5" if self.protocol == "5" else "3.1.1" if self.protocol == "3.1.1" else "auto",
            **overrides,
        )


def broker_options(fn: F | None = None, *, default_port: int = 1883) -> Any:
    """Fleet broker connection options, collected into ``broker: BrokerOptions``. Used bare
    (``@broker_options``) or with another default port (``@broker_options(default_port=8883)``)."""
    if fn is None:
        return functools.partial(broker_options, default_port=default_port)
    opts = [
        click.option(
            "--broker",
            "brokers",
            metavar="HOST:PORT",
            multiple=True,
            envvar="EDGELINE_BROKERS",
            help="Fleet broker address; repeat it for the nodes of a cluster, tried in turn "
            "(env EDGELINE_BROKERS, space-separated). Given, it replaces --broker-host/--broker-port.",
        ),
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
            default=default_port,
            show_default=True,
            help="Fleet broker port (env EDGELINE_BROKER_PORT).",
        ),
        click.option(
            "--protocol",
            type=click.Choice(["auto", "5", "3.1.1"]),
            default="auto",
            show_default=True,
            help="MQTT protocol version; auto: 5 where the broker accepts it, else 3.1.1.",
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
        addresses = _parse_brokers(kw.pop("brokers"), default_port)
        host, port = addresses[0] if addresses else (kw["host"], kw["port"])
        kw.pop("host")
        kw.pop("port")
        kw["broker"] = BrokerOptions(
            host,
            port,
            kw.pop("protocol"),
            kw.pop("topic_root"),
            kw.pop("fleet_name"),
            kw.pop("username"),
            kw.pop("password_file"),
            kw.pop("ca_file"),
            kw.pop("cert_file"),
            kw.pop("key_file"),
            tuple(addresses[1:]),
        )
        return fn(*args, **kw)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper


def _parse_brokers(values: tuple[str, ...], default_port: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for value in values:
        for item in value.replace(",", " ").split():
            try:
                address = parse_address(item, default_port)
            except TransportError as exc:
                raise click.BadParameter(str(exc), param_hint="--broker") from exc
            if address not in out:
                out.append(address)
    return out


def renamed_option(old: str, param: str) -> Callable[[F], F]:
    """Accept ``old``, an option's former spelling, hidden from ``--help``, as the option whose value
    is ``param``; given both, the new spelling wins unless it is at its default."""

    def deco(fn: F) -> F:
        legacy = f"_legacy_{param}"

        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            old_value = kw.pop(legacy, None)
            if old_value is not None:
                ctx = click.get_current_context()
                if ctx.get_parameter_source(param) in (None, click.core.ParameterSource.DEFAULT):
                    kw[param] = old_value
            return fn(*args, **kw)

        target = next((p for p in getattr(fn, "__click_params__", []) if p.name == param), None)
        kind = target.type if target is not None else click.STRING
        return click.option(old, legacy, type=kind, hidden=True, default=None)(wrapper)  # type: ignore[return-value]

    return deco


def keys_option(fn: F | None = None, *, param: str = "keys_dir", legacy_dir: bool = False) -> Any:
    """``--keys DIR``: the key directory (root key, signing key, trust.json; env EDGELINE_KEYS).
    ``legacy_dir`` also accepts ``edgeline keys``' former spelling ``--dir`` (hidden)."""
    if fn is None:
        return functools.partial(keys_option, param=param, legacy_dir=legacy_dir)
    out = click.option(
        "--keys",
        param,
        type=click.Path(file_okay=False, path_type=Path),
        envvar="EDGELINE_KEYS",
        default=Path("keys"),
        show_default=True,
        help="Key directory made by 'edgeline keys init' (env EDGELINE_KEYS).",
    )(fn)
    return renamed_option("--dir", param)(out) if legacy_dir else out


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[JSON_META] = True
    return value


def json_option(fn: F) -> F:
    """``--json``: machine-readable output on stdout (and errors as one JSON object)."""
    return click.option(
        "--json", "as_json", is_flag=True, is_eager=True, callback=_remember_json, help="Machine-readable JSON output."
    )(fn)


def connect(broker: BrokerOptions, client_id: str, timeout: float = 10.0) -> MqttLink:
    errors = []
    for host, port in broker.addresses:  # fail fast with a clear message when nothing listens anywhere
        try:
            socket.create_connection((host, port), timeout=min(timeout, 5.0)).close()
            break
        except OSError as exc:
            errors.append(f"{format_address((host, port))}: {exc}")
    else:
        raise click.ClickException(f"fleet broker not reachable ({'; '.join(errors)})")
    link = MqttLink(broker.link_settings(client_id, clean_start=True))
    try:
        link.connect(timeout)
    except EdgelineError as exc:
        link.stop()
        raise click.ClickException(f"fleet broker: {exc}") from exc
    return link


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))
