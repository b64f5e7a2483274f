"""``edgeline shadow report`` and ``edgeline shadow promote`` on a real broker, real devices (the
updater in process), the real registry and telemetry store: promotion is refused below the policy
(the policy and the evidence printed, no rollout started) and goes through the normal rollout above
it; the policy's conditions one by one on windows as the ingest stores them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cloud_registry.errors import RegistryError
from cloud_registry.telemetry.shadow_policy import PromotionPolicy, judge
from cloud_registry.telemetry.shadow_report import build_report
from cloud_registry.telemetry.store import TelemetryStore
from edgeline.cli.main import cli
from edgeline.core.protocol.shadow_window import VERDICTS
from edgeline.core.protocol.telemetry import TelemetryWindow, parse_window
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for

LINES = ("a" * 32, "b" * 32)


def _window(
    line: str,
    start: float,
    sha2: str,
    *,
    compared: int = 100,
    agree: float = 0.98,
    drifted: bool = False,
    group: str = "line-p",
) -> TelemetryWindow:
    same = round(compared * agree)
    agreement = {a: dict.fromkeys(VERDICTS, 0) for a in VERDICTS}
    agreement["ok"]["ok"] = same
    agreement["ok"]["defect"] = compared - same
    return parse_window(
        {
            "schema": "edgeline.telemetry/1",
            "key": uuid.uuid4().hex,
            "device": line,
            "group": group,
            "model": {"name": "tiny", "version": 1, "sha256": "c" * 64},
            "start": start,
            "end": start + 60,
            "frames": compared + 10,
            "class_counts": {"ok": compared + 10},
            "confidence": [0] * 9 + [compared + 10],
            "input_stats": {},
            "shadow": {
                "challenger": {"name": "tiny", "version": 2, "sha256": sha2},
                "compared": compared,
                "skipped": 10,
                "agreement": agreement,
                "disagreement": {"ok": {"spot": compared - same}} if compared > same else {},
                "confidence": [0] * 9 + [compared],
                "latency_ms": {"p50": 0.2, "p99": 0.9},
                "drift": {"confidence": {"psi": 0.4 if drifted else 0.01, "threshold": 0.2, "drifted": drifted}},
            },
        }
    )


def _cli(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False, env={"COLUMNS": "220"})
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_promotion_is_refused_below_the_policy_and_rolled_out_above_it(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    common = ["--home", str(home)]
    net = ["--broker-port", str(cloud.broker.port), "--keys", str(cloud.key_dir)]
    for v in (1, 2):
        _cli("registry", "add", str(bundles[v].path), *common, "--trust", str(cloud.key_dir / "trust.json"))
    devs = [cloud.device(d, groups=("line-p",), frames=frames) for d in ("p-1", "p-2")]
    assert json.loads(_cli("deploy", "tiny@1", "--to", "group:line-p", *common, *net, "--json").stdout)["status"] == (
        "completed"
    )
    sha2 = bundles[2].manifest.artifact.sha256
    store = TelemetryStore(home / "telemetry.db")
    t0 = 1.7e9
    for i in range(2):
        for line in LINES:
            store.add(_window(line, t0 + 60 * i, sha2))
    store.add(_window(LINES[0], t0, "d" * 64).model_copy(update={"shadow": None}))  # a window without a shadow

    rep = json.loads(_cli("shadow", "report", "tiny@2", *common, "--json").stdout)
    assert set(rep["lines"]) == set(LINES) and rep["total"]["compared"] == 400
    assert rep["total"]["agreement_rate"] == pytest.approx(0.98)
    assert rep["groups"]["line-p"]["disagreement"] == [{"champion": "ok", "challenger": "spot", "frames": 8}]
    table = _cli("shadow", "report", "tiny@2", *common).output
    assert "per line" in table and "ok->spot" in table

    refused = _cli("shadow", "promote", "tiny@2", "--to", "group:line-p", *common, *net, ok=False).output
    assert "policy: at least 2 line(s) with evidence; per line at least 500 frames compared" in refused
    assert "200 frames compared < 500" in refused and "promotion of tiny v2 refused" in refused
    assert [r["model"] for r in json.loads(_cli("rollout", "status", *common, "--json").stdout)] == ["tiny@1"]
    assert [d.version() for d in devs] == [1, 1]

    for i in range(2, 6):
        for line in LINES:
            store.add(_window(line, t0 + 60 * i, sha2))
    store.close()
    done = json.loads(
        _cli("shadow", "promote", "tiny@2", "--to", "group:line-p", "--canary", "1", *common, *net, "--json").stdout
    )
    assert done["decision"]["accepted"] and done["rollout"]["status"] == "completed"
    assert sorted(done["shadow_stopped"]) == ["p-1", "p-2"]
    assert wait_for(lambda: [d.version() for d in devs] == [2, 2])


def test_each_condition_of_the_policy(tmp_path: Path) -> None:
    sha2 = "e" * 64
    store = TelemetryStore(tmp_path / "t.db")
    for i in range(6):
        store.add(_window(LINES[0], 1.7e9 + 60 * i, sha2))
        store.add(_window(LINES[1], 1.7e9 + 60 * i, sha2, agree=0.9, drifted=i in (1, 3, 4, 5)))
    windows = [sw.window for sw in store.windows("tiny")]
    store.close()
    rep = build_report(windows, "tiny", 2)
    assert rep.lines[LINES[1]].drift_run == 3 and rep.lines[LINES[1]].drifted_windows == 4
    d = judge(rep, PromotionPolicy(min_frames=500, min_agreement=0.95, max_drift_run=3, min_lines=2))
    assert not d.accepted and list(d.failing_lines) == [LINES[1]]
    assert d.failing_lines[LINES[1]] == [
        "agreement 90.0% < 95.0%",
        "challenger drift flagged in 3 windows in a row (limit 2)",
    ]
    assert judge(rep, PromotionPolicy(min_frames=500, min_agreement=0.85, max_drift_run=4, min_lines=2)).accepted
    assert not judge(rep, PromotionPolicy(min_frames=601, min_agreement=0.85, max_drift_run=4)).accepted
    assert (
        "the policy needs 3" in judge(rep, PromotionPolicy(min_agreement=0.85, max_drift_run=4, min_lines=3)).reasons[0]
    )
    other = build_report(windows, "tiny", 3)  # another challenger: no evidence at all
    assert not other.lines and not judge(other, PromotionPolicy()).accepted
    assert not build_report(windows, "tiny", 2, group="elsewhere").lines
    with pytest.raises(RegistryError, match="min_agreement"):
        PromotionPolicy(min_agreement=1.5)
