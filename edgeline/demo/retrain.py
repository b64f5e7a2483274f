"""Retraining in the demo: the ``edgeline retrain`` machinery (:mod:`cloud_registry.telemetry.retrain`)
run on the drift evidence the cloud stored.

It reads the drifted windows since the lighting settled, measures how the field's images differ from
the training images (brightness offset, contrast ratio, refined by simulating the camera), trains v2
on the labelled data on hand plus copies augmented around that lighting, and gates it: v2 must beat
v1 on held-out images transformed the same way by ``min_gain`` and may lose at most
``max_normal_drop_pp`` on normal images.
The demo registers it and runs the rollout itself (stage 7), so the policy here starts none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_registry.errors import RegistryError
from cloud_registry.store import ModelVersion
from cloud_registry.telemetry.retrain import RetrainPolicy, RetrainResult, plan_retrain
from cloud_registry.telemetry.retrain import retrain as run_retrain
from edge_agent.bundle import open_bundle
from edgeline.core.errors import EdgelineError
from edgeline.core.protocol.manifest import Manifest
from edgeline.demo.cloud import DemoCloud
from edgeline.demo.errors import DemoError
from edgeline.demo.models import MODEL_NAME, HookToDetail, Report
from edgeline.demo.settings import DemoSettings
from edgeline.demo.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retrained:
    manifest: Manifest
    bundle_dir: Path
    registered: ModelVersion
    result: RetrainResult

    @property
    def lighting(self) -> tuple[float, float]:
        light = self.result.plan.lighting
        return light.brightness, light.contrast

    def gate(self, min_gain: float, max_drop_pp: float) -> dict[str, Any]:
        acc = self.result.accuracy
        return {
            "v1_field": round(acc["parent_drifted"], 4),
            "v2_field": round(acc["new_drifted"], 4),
            "v1_clean": round(acc["parent_normal"], 4),
            "v2_clean": round(acc["new_normal"], 4),
            "rule": f"v2 beats v1 by more than {min_gain:.0%} on held-out images under the field's lighting, "
            f"and loses at most {max_drop_pp:g} points on normal ones",
            "passed": True,
        }


def policy_for(s: DemoSettings) -> RetrainPolicy:
    # The evidence pools every line's windows since the drift settled: one line of N drifting is
    # reason enough, so the share of flagged windows needed is below 1/N.
    return RetrainPolicy(
        min_windows=s.evidence_windows,
        min_drifted_share=0.5 / s.devices,
        min_gain_pp=100.0 * s.min_gain,
        max_normal_drop_pp=s.max_normal_drop_pp,
        augment_copies=s.augment_copies,
        rollout_target=None,
    )


def retrain(
    cloud: DemoCloud, ws: Workspace, s: DemoSettings, *, parent: int, since: float, report: Report
) -> Retrained:
    reg = cloud.registry
    policy = policy_for(s)
    try:
        mv = reg.store.get_version(MODEL_NAME, parent)
        parent_manifest = reg.manifest(mv)
        report("reading the drift evidence from telemetry")
        plan = plan_retrain(
            cloud.telemetry,
            MODEL_NAME,
            version=parent,
            since=since,
            reference_for=lambda _name, _version: parent_manifest.reference,
            policy=policy,
        )
        report(
            f"field lighting: brightness {plan.lighting.brightness:+.0f}, contrast x{plan.lighting.contrast:.2f}; "
            "fitting it by simulating the camera, then training"
        )
        registered: list[ModelVersion] = []

        def register(bundle_dir: Path, parent_version: int) -> ModelVersion:
            new = reg.add_bundle(bundle_dir, cloud.trust, parent=parent_version, note="retrained from drift evidence")
            reg.promote(new.name, new.version, "staging")
            registered.append(new)
            return new

        result = run_retrain(
            plan,
            ws.dataset,
            ws.bundle(f"v{parent + 1}"),
            key_dir=ws.keys,
            parent=(parent_manifest, reg.artifact(mv)),
            policy=policy,
            seed=s.seed,
            register=register,
            progress=HookToDetail(report, f"v{parent + 1}"),
        )
        bundle = open_bundle(result.bundle_dir, cloud.trust, check_expiry=False)
    except (RegistryError, EdgelineError) as exc:
        raise DemoError(f"retraining failed: {exc}") from exc
    if not registered:
        raise DemoError("retraining produced no registered version")
    return Retrained(bundle.manifest, result.bundle_dir, registered[0], result)
