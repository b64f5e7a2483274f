"""``edgeline console serve`` (the web console on the registry host) and ``edgeline console user
add|list|remove`` (its accounts, hashed in the registry store)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from converters.keys import SigningKey, load_signing_key
from edgeline.cli.options import BrokerOptions, broker_options, echo_json, json_option, keys_option, registry_options
from edgeline.cli.registry_access import open_registry
from edgeline.cli.telemetry_common import DB, telemetry_url


class ServeByDefault(click.Group):
    """``edgeline console [OPTIONS]`` is ``edgeline console serve [OPTIONS]``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


@click.group(cls=ServeByDefault)
def console() -> None:
    """The web console: fleet, rollouts, models, drift and alerts, audit; live, with accounts.

    Without a command, 'edgeline console [OPTIONS]' serves it (the options of 'serve')."""


@console.command("serve")
@click.option(
    "--bind",
    default="127.0.0.1:8080",
    show_default=True,
    help="HOST:PORT to listen on. Beyond loopback only with --https-cert-file/--https-key-file or --allow-plain-http.",
)
@click.option(
    "--https-cert-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Serve HTTPS with this certificate (PEM; the chain after the leaf).",
)
@click.option(
    "--https-key-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The private key of --https-cert-file (PEM).",
)
@click.option(
    "--allow-plain-http",
    is_flag=True,
    help="Serve plain HTTP beyond loopback (a network you trust: passwords and cookies cross it in clear).",
)
@registry_options
@DB
@broker_options
@keys_option
@json_option
def serve(
    bind: str,
    https_cert_file: Path | None,
    https_key_file: Path | None,
    allow_plain_http: bool,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    db: str | None,
    broker: BrokerOptions,
    keys_dir: Path,
    as_json: bool,
) -> None:
    """Serve the console until Ctrl-C. It watches the fleet on one broker link (the devices' retained
    states and events; no device is polled), starts the rollouts operators ask for with the signing
    key of --keys, and keeps showing what it last knew while the broker or the store is away.

    The broker's own TLS options (--ca-file, --cert-file, --key-file) are the link to the broker;
    --https-cert-file/--https-key-file are the console's own certificate."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        need = f"'edgeline console serve' needs {exc.name}: pip install 'edgeline[console]'"
        raise click.ClickException(need) from exc
    from edgeline.console.server import Bind, ConsoleServer, Tls, build, check_exposure, cookies_secure

    where = Bind.parse(bind)
    if (https_cert_file is None) != (https_key_file is None):
        raise click.UsageError("--https-cert-file and --https-key-file go together")
    tls = Tls(https_cert_file, https_key_file) if https_cert_file and https_key_file else None
    check_exposure(where, tls, allow_plain_http=allow_plain_http)
    from edgeline.core.mqtt_link import MqttLink

    def signer() -> SigningKey:
        return load_signing_key(keys_dir)

    with open_registry(home, store_url, artifacts_url) as reg:
        link = MqttLink(broker.link_settings(f"edgeline-console-{os.getpid()}", clean_start=True))
        telemetry = telemetry_url(home, db, store_url)
        c = build(reg, link, broker.topics, signer, telemetry, secure_cookies=cookies_secure(where, tls))
        link.start()  # in the background: the console serves (what it knows) with the broker down too
        try:
            server = ConsoleServer(c, where, tls)
            if as_json:
                echo_json({"url": f"{'https' if tls else 'http'}://{where.host}:{where.port}"})
            else:
                click.echo(f"edgeline console on {'https' if tls else 'http'}://{where.host}:{where.port}", err=True)
            server.run()
        finally:
            link.stop()


@console.group()
def user() -> None:
    """Console accounts (viewer: reads every page; operator: also deploys, pauses, resumes, aborts)."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["viewer", "operator"]), default="viewer", show_default=True)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (for scripts) instead of a prompt."
)
@registry_options
@json_option
def user_add(
    username: str,
    role: str,
    password_stdin: bool,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    as_json: bool,
) -> None:
    """Add USERNAME with ROLE; the password is stored as a salted scrypt hash."""
    from edgeline.console.accounts import add_user

    if password_stdin:
        password = click.get_text_stream("stdin").readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    with open_registry(home, store_url, artifacts_url) as reg:
        row = add_user(reg.store, username, password, role)
    if as_json:
        echo_json({"username": row.username, "role": row.role})
    else:
        click.echo(f"added {row.username} ({row.role})")


@user.command("list")
@registry_options
@json_option
def user_list(home: Path, store_url: str | None, artifacts_url: str | None, as_json: bool) -> None:
    """The console's accounts and their roles."""
    with open_registry(home, store_url, artifacts_url) as reg:
        users = reg.store.list_users()
    if as_json:
        echo_json([{"username": u.username, "role": u.role, "created_at": u.created_at} for u in users])
        return
    for u in users:
        click.echo(f"{u.username}\t{u.role}")


@user.command("remove")
@click.argument("username")
@registry_options
def user_remove(username: str, home: Path, store_url: str | None, artifacts_url: str | None) -> None:
    """Remove USERNAME and end its sessions."""
    with open_registry(home, store_url, artifacts_url) as reg:
        reg.store.remove_user(username)
    click.echo(f"removed {username}")
