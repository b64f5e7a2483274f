"""``edgeline broker check``: what a broker offers edgeline, measured with real clients."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from edgeline.cli.options import BrokerOptions, broker_options, echo_json, json_option
from edgeline.core.errors import TransportError
from edgeline.core.mqtt.probe import BrokerReport, probe_broker
from edgeline.core.mqtt.settings import format_address, parse_address


def _address(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port``, ``mqtts://host:port`` (TLS: --ca-file) or ``host:port``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "mqtt", url
    if scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise click.BadParameter(f"{url!r}: use mqtt://host:port or mqtts://host:port", param_hint="URL")
    tls = scheme in ("mqtts", "ssl")
    try:
        host, port = parse_address(rest.rstrip("/"), 8883 if tls else 1883)
    except TransportError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from exc
    return host, port, tls


def _config_brokers(path: Path) -> list[str]:
    from firmware_configs.loader import load_config

    cloud = load_config(path).cloud
    return [f"{h}:{p}" for h, p in cloud.addresses()]


def _show(r: BrokerReport) -> None:
    click.echo(f"{r.address}: {'usable' if r.usable else 'NOT usable'} by edgeline")
    for version, outcome in r.versions.items():
        click.echo(f"  MQTT {version:<6} {outcome}")
    click.echo(f"  retained, exact topic      {_yes(r.retained_exact)}")
    click.echo(f"  retained, wildcard filter  {_yes(r.retained_wildcard)}")
    click.echo(f"  shared subscriptions       {r.shared_subscriptions}")
    granted = ", ".join(f"{k}->{'refused' if v is None else v}" for k, v in r.qos_granted.items())
    click.echo(f"  QoS asked->granted         {granted or '-'}")
    failed = f", {r.max_payload_failed} B failed" if r.max_payload_failed else ""
    click.echo(f"  largest payload through    {r.max_payload_ok} B{failed}")
    for note in r.notes:
        click.echo(f"  note: {note}")


def _yes(v: bool | None) -> str:
    return "untested" if v is None else "yes" if v else "no"


@click.command("check")
@click.argument("urls", nargs=-1, metavar="[URL]...")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Check the brokers of a device config's [cloud] section instead.",
)
@click.option("--timeout", type=click.FloatRange(0.5, 60), default=5.0, show_default=True, help="Seconds per wait.")
@click.option(
    "--max-payload",
    type=click.IntRange(1024, 256 * 1024 * 1024),
    default=16 * 1024 * 1024,
    show_default=True,
    help="Largest payload tried (bytes).",
)
@broker_options
@json_option
def check(
    urls: tuple[str, ...],
    config_file: Path | None,
    timeout: float,
    max_payload: int,
    broker: BrokerOptions,
    as_json: bool,
) -> None:
    """Probe brokers (mqtt://host:port, mqtts://host:port; default: the --broker addresses) and report
    the MQTT versions they accept, whether retained messages reach exact topics and wildcard filters,
    shared subscriptions, the QoS levels granted and the largest payload that goes through. Probe
    topics live under <root>/<fleet>/probe/ and are cleared. Exits 1 when a broker is not usable."""
    targets = list(urls) or (
        _config_brokers(config_file) if config_file else [format_address(a) for a in broker.addresses]
    )
    reports = []
    for url in targets:
        host, port, tls = _address(url)
        if tls and broker.ca_file is None:
            raise click.UsageError(f"{url}: mqtts needs --ca-file")
        opts = dataclasses.replace(broker, host=host, port=port, brokers=())
        if not tls and url.startswith(("mqtt://", "tcp://")):
            opts = dataclasses.replace(opts, ca_file=None, cert_file=None, key_file=None)
        settings = opts.link_settings("edgeline-check")
        reports.append(probe_broker(settings, opts.topics, timeout=timeout, max_payload=max_payload))
    if as_json:
        echo_json([r.to_dict() for r in reports])
    else:
        for r in reports:
            _show(r)
    if not all(r.usable for r in reports):
        raise click.exceptions.Exit(1)
