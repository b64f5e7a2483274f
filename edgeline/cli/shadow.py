"""``edgeline shadow report|promote`` and the shadow side of ``edgeline deploy`` (``--shadow``,
``--stop-shadow``): a challenger beside the serving model, the field evidence it gathers, and its
promotion through the normal rollout when the evidence meets a stated policy."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cloud_registry import shadow_deploy
from edgeline.cli.options import BrokerOptions, echo_json
from edgeline.cli.registry_access import open_registry
from edgeline.cli.rollout import _runner


def deploy_shadow(
    ref: str | None,
    target: str,
    timeout: float,
    store: tuple[Path, str | None, str | None],
    broker: BrokerOptions,
    keys_dir: Path,
    as_json: bool,
) -> None:
    """Start REF as the challenger on TARGET's devices (``ref`` None: stop their challengers), and
    wait until each device answered."""
    with open_registry(*store) as reg, _runner(reg, broker, keys_dir) as runner:
        runner.fleet.settle()
        if ref is None:
            devices = shadow_deploy.stop(runner.publisher, runner.fleet, target)
            plan: dict[str, int | None] = dict.fromkeys(devices)
            sha = None
            what = "stop"
        else:
            sp = shadow_deploy.deploy(reg, runner.publisher, runner.fleet, ref, target)
            plan = dict(sp.sequences)
            sha = sp.model.sha256
            what = f"{sp.model.name}@{sp.model.version}"
        outcomes = shadow_deploy.wait(runner.fleet, plan, sha, timeout)
    _outcomes(what, outcomes, as_json)


def _outcomes(what: str, outcomes: dict[str, shadow_deploy.Outcome], as_json: bool) -> None:
    if as_json:
        echo_json(
            {
                "shadow": what,
                "devices": {
                    d: {"status": o.status, "reason": o.reason, "detail": o.detail} for d, o in outcomes.items()
                },
            }
        )
    else:
        table = Table("device", "shadow", "reason", title=f"shadow {what}")
        for d, o in sorted(outcomes.items()):
            table.add_row(d, o.status, f"{o.reason}: {o.detail}" if o.reason else "")
        Console().print(table)
    bad = [d for d, o in outcomes.items() if o.status in ("refused", "waiting")]
    if bad:
        raise click.ClickException(f"shadow {what}: {len(bad)} of {len(outcomes)} devices refused or did not answer")


@click.group()
def shadow() -> None:
    """Shadow deployments: the challenger's field evidence, and its promotion."""
