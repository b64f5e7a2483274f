"""Root of the ``edgeline`` command. Subcommands load lazily so that ``edgeline agent ...`` on a device
with only ``edgeline[agent]`` installed never imports scikit-learn, skl2onnx or onnx, and so that
``edgeline --help`` is instant.

Each entry: name -> (module:attribute, one-line help, extra needed).

Errors: commands let the project's errors (:class:`~edgeline.core.errors.EdgelineError` and every
root derived from it) propagate; :meth:`LazyGroup.invoke` maps them once (:mod:`edgeline.cli.errors`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from edgeline.cli.errors import to_click, wants_json
from edgeline.core.errors import EdgelineError

COMMANDS: dict[str, tuple[str, str, str]] = {
    # device side (edgeline[agent])
    "agent": ("edgeline.cli.agent:agent", "Run, check and inspect the device agent.", "agent"),
    "predict": ("edgeline.cli.predict:predict", "Batch inference over an image folder or a video.", "agent"),
    "verify": ("edgeline.cli.verify:verify", "Check a bundle's signature, hashes and self-test.", "agent"),
    # build pipeline (edgeline[cloud])
    "dataset": ("edgeline.cli.dataset:dataset", "Make and inspect image datasets (synthetic line images).", "cloud"),
    "train": ("edgeline.cli.train:train", "Train, convert, quantize, gate and bundle a model.", "cloud"),
    "import": ("edgeline.cli.import_onnx:import_onnx", "Quantize, gate and bundle an existing ONNX model.", "cloud"),
    "keys": ("edgeline.cli.keys:keys", "Create, rotate and revoke signing keys.", "agent"),
    # registry, delivery and fleet (edgeline[cloud])
    "registry": ("edgeline.cli.registry:registry", "Models, versions, stages and lineage.", "cloud"),
    "deploy": ("edgeline.cli.rollout:deploy", "Roll a model version out to devices in waves.", "cloud"),
    "rollout": ("edgeline.cli.rollout:rollout", "Status, pause, resume or abort a rollout.", "cloud"),
    "rollback": ("edgeline.cli.rollout:rollback", "Send devices back to a previous version.", "cloud"),
    "shadow": ("edgeline.cli.shadow:shadow", "A challenger's field evidence and its promotion.", "cloud"),
    "fleet": ("edgeline.cli.fleet:fleet", "Devices, their state, model and last error.", "cloud"),
    "config": ("edgeline.cli.config_cmd:config", "Push signed remote config to devices; status, diff.", "cloud"),
    "ingest": ("edgeline.cli.telemetry:ingest", "Run the telemetry ingest service.", "cloud"),
    "drift": ("edgeline.cli.telemetry:drift", "Drift report for a model: table and PNG.", "cloud"),
    "field": ("edgeline.cli.field:field", "Field escape and false-reject rates: feedback and estimates.", "cloud"),
    "retrain": ("edgeline.cli.retrain:retrain", "Retrain a model from drift evidence.", "cloud"),
    "console": ("edgeline.cli.console:console", "The web console: fleet, rollouts, models, drift, audit.", "console"),
    "broker": ("edgeline.cli.broker:broker", "Broker configs, test CA and certificates.", "cloud"),
    "demo": ("edgeline.cli.demo:demo", "Run the whole cycle on a synthetic line, with a report.", "cloud"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        target, _, extra = entry
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing.split(".")[0] in {"edgeline", "edge_agent", "converters", "cloud_registry", "firmware_configs"}:
                raise click.ClickException(f"'edgeline {cmd_name}' is not available in this build ({exc})") from exc
            raise click.ClickException(
                f"'edgeline {cmd_name}' needs the {missing} package: pip install 'edgeline[{extra}]'"
            ) from exc
        cmd = getattr(module, attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgelineError as exc:
            raise to_click(exc, wants_json(ctx)) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="edgeline")
def cli(verbose: int) -> None:
    """edgeline: train, quantize, sign and roll out models to offline inspection lines, and close the
    loop with private telemetry, drift detection and retraining."""
    level = logging.WARNING - 10 * min(verbose, 2)
    env_level = os.environ.get("EDGELINE_LOG_LEVEL")
    logging.basicConfig(
        level=env_level.upper() if env_level else level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="edgeline")


if __name__ == "__main__":
    main()
