"""The one place where the project's errors become command-line failures.

Every command lets :class:`~edgeline.core.errors.EdgelineError` (and the roots that derive from it:
``RegistryError``, ``ConverterError``, ``ConfigError``, ``EdgeAgentError``, ``DemoError``) propagate;
the root group (:mod:`edgeline.cli.main`) turns it into exit code 1 with the message on stderr, or,
for a command run with ``--json``, one JSON object on stdout::

    {"ok": false, "error": "<message>", "kind": "<exception class>", "reason": "<machine-readable code>"}
"""

from __future__ import annotations

import json

import click

from edgeline.core.errors import EdgelineError

#: ``ctx.meta`` key set by the ``--json`` option of :mod:`edgeline.cli.options` (meta is shared by
#: every context of one invocation, so the root group sees what the subcommand asked for)
JSON_META = "edgeline.json"


class JsonFailure(click.exceptions.Exit):
    """Exit 1 after the JSON error document was printed."""

    def __init__(self) -> None:
        super().__init__(1)


def error_document(exc: EdgelineError) -> dict[str, object]:
    return {"ok": False, "error": str(exc), "kind": type(exc).__name__, "reason": exc.reason}


def to_click(exc: EdgelineError, as_json: bool) -> click.ClickException | click.exceptions.Exit:
    """The CLI failure for ``exc``: a ClickException (message on stderr) or, with ``--json``, the JSON
    error document on stdout and exit code 1."""
    if as_json:
        click.echo(json.dumps(error_document(exc)))
        return JsonFailure()
    return click.ClickException(str(exc))


def wants_json(ctx: click.Context) -> bool:
    return bool(ctx.meta.get(JSON_META))
