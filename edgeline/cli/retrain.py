"""``edgeline retrain``: sustained drift -> the next version, gated, registered, canary rollout."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from cloud_registry.telemetry.store import open_telemetry_store
from edgeline.cli.options import BrokerOptions, broker_options, connect, json_option, keys_option, registry_options
from edgeline.cli.registry_access import open_registry
from edgeline.cli.telemetry_common import DB, telemetry_exists, telemetry_url
from edgeline.core.protocol.manifest import Reference


@click.command()
@click.option("--model", "-m", required=True, help="Model name.")
@click.option("--version", "-V", type=click.IntRange(min=1), default=None, help="Drifted version (default: latest).")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Labeled images on hand (one folder per class).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="New bundle.")
@keys_option(param="key_dir")
@registry_options
@DB
@click.option("--estimator", default="mlp", show_default=True, help="Estimator of the build pipeline.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--hours", type=float, default=None, help="Only the last N hours of drift evidence.")
@click.option("--min-windows", type=click.IntRange(min=1), default=6, show_default=True, help="Evidence needed.")
@click.option(
    "--min-drifted-share",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of windows flagged on brightness/contrast needed.",
)
@click.option("--rollout-target", default=None, metavar="group:NAME|device:ID", help="Start a canary rollout here.")
@click.option("--canary", type=click.IntRange(min=0), default=1, show_default=True, help="Canary devices first.")
@click.option("--waves", default="100%", show_default=True, help="Waves after the canary.")
@broker_options
@click.option("--force", is_flag=True, help="Overwrite an existing --out directory.")
@click.option("--dry-run", is_flag=True, help="Only read the evidence and print the plan.")
@json_option
def retrain(
    model: str,
    version: int | None,
    data_dir: Path,
    out_dir: Path,
    key_dir: Path,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    db: str | None,
    estimator: str,
    seed: int,
    hours: float | None,
    min_windows: int,
    min_drifted_share: float,
    rollout_target: str | None,
    canary: int,
    waves: str,
    broker: BrokerOptions,
    force: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Retrain MODEL from drift evidence: read the brightness and contrast shift of the field from the
    telemetry histograms, train the next version on the labeled images in --data with augmentation
    matched to it, gate it (the build pipeline's quality gate, then: better than its parent on held-out
    images under the measured lighting, not worse on normal ones), register it as vN+1 with lineage
    pointing to the drift evidence, and optionally start a canary rollout. Exits 1 when the evidence
    does not show sustained drift or a gate refuses the model."""
    from cloud_registry.telemetry.retrain import RetrainPolicy, plan_retrain
    from cloud_registry.telemetry.retrain import retrain as run_retrain
    from converters.keys import KeyPaths
    from edgeline.cli.build_common import progress_bars
    from edgeline.core.protocol.signing import TrustStore

    url = telemetry_url(home, db, store_url)
    if not telemetry_exists(url):
        raise click.ClickException(f"no telemetry database at {url} (run 'edgeline ingest' first, or pass --db)")
    if store_url is None and not (home / "registry.db").exists():
        raise click.ClickException(f"no registry under {home} (or pass --store): register the model first")
    policy = RetrainPolicy(
        min_windows=min_windows,
        min_drifted_share=min_drifted_share,
        rollout_target=rollout_target,
        canary=canary,
        waves=waves,
    )
    with open_registry(home, store_url, artifacts_url) as reg:

        def reference_for(name: str, ver: int) -> Reference | None:
            return reg.manifest(reg.resolve(f"{name}@{ver}")).reference

        latest = reg.resolve(f"{model}@latest").version
        plan = plan_retrain(
            open_telemetry_store(url),
            model,
            version=version,
            reference_for=reference_for,
            next_version=latest + 1,
            since=time.time() - hours * 3600 if hours else None,
            policy=policy,
        )
        if dry_run:
            doc = {
                "plan": {"model": model, "parent": plan.parent_version, "next": plan.next_version},
                "lighting": plan.lighting.__dict__,
                "evidence": plan.shift.evidence,
            }
            click.echo(json.dumps(doc, default=str, indent=None if as_json else 1))
            return
        parent_mv = reg.resolve(f"{model}@{plan.parent_version}")
        trust = TrustStore.load(KeyPaths(key_dir).trust)

        def register(bundle_dir: Path, parent: int) -> object:
            return reg.add_bundle(bundle_dir, trust, parent=parent, note="retrained for drift")

        with progress_bars(not as_json) as hook:
            result = run_retrain(
                plan,
                data_dir,
                out_dir,
                key_dir=key_dir,
                parent=(reg.manifest(parent_mv), reg.artifact(parent_mv)),
                policy=policy,
                estimator=estimator,
                seed=seed,
                register=register,
                start_rollout=_rollout_starter(reg, key_dir, broker) if rollout_target else None,
                force=force,
                progress=hook,
            )
    doc = result.to_dict()
    if as_json:
        click.echo(json.dumps(doc, default=str))
        return
    a = result.accuracy
    click.echo(
        f"{model} v{result.version} registered (parent v{plan.parent_version}); matched lighting "
        f"brightness {plan.lighting.brightness:+.1f}, contrast x{plan.lighting.contrast:.2f}\n"
        f"  accuracy under the field's lighting: v{plan.parent_version} {a['parent_drifted']:.3f} -> "
        f"v{result.version} {a['new_drifted']:.3f}; normal lighting {a['parent_normal']:.3f} -> {a['new_normal']:.3f}"
        + (f"\n  canary rollout {result.rollout_id} started" if result.rollout_id else "")
    )


def _rollout_starter(reg: Any, key_dir: Path, broker: BrokerOptions) -> Any:
    """A rollout starter (see ``retrain.RolloutStarter``) through the registry's rollout runner, on
    the fleet broker given by the shared broker options (TLS, credentials, topic root, fleet)."""

    def start(ref: str, policy: Any) -> str:
        from cloud_registry.fleet import FleetWatcher
        from cloud_registry.publisher import Publisher
        from cloud_registry.rollout_runner import RolloutRunner
        from converters.keys import load_signing_key

        link = connect(broker, "edgeline-retrain")
        topics = broker.topics
        try:
            fleet = FleetWatcher(link, topics, book=reg.store)
            fleet.settle()
            runner = RolloutRunner(reg, Publisher(link, topics, load_signing_key(key_dir)), fleet)
            r = runner.create(
                ref,
                policy.rollout_target,
                canary=policy.canary,
                waves=policy.waves,
                max_failure_pct=policy.max_failure_pct,
            )
            return str(r.plan.id)
        finally:
            link.stop()

    return start
