"""Console fixtures: a registry home with accounts, and a console (its app and state) on a broker
link that is started only when a broker is given."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud_registry.registry import Registry, RegistryPaths
from converters.keys import load_signing_key
from edgeline.console.accounts import add_user
from edgeline.console.app import Console
from edgeline.console.auth import LoginLimiter
from edgeline.console.server import build
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import free_port

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its test client; httpx works the same
    warnings.simplefilter("ignore")
    import starlette.testclient  # noqa: F401

OPERATOR = ("olga", "operator-secret-1")
VIEWER = ("victor", "viewer-secret-22")


@dataclass
class Home:
    path: Path
    registry: Registry
    key_dir: Path


@pytest.fixture
def home(tmp_path: Path, key_dir: Path) -> Iterator[Home]:
    paths = RegistryPaths(tmp_path / "home")
    reg = Registry.open(paths.store_url, paths.artifacts_url)
    add_user(reg.store, *OPERATOR, "operator")
    add_user(reg.store, *VIEWER, "viewer")
    try:
        yield Home(tmp_path / "home", reg, key_dir)
    finally:
        reg.close()


def make_console(
    h: Home, broker_port: int | None, *, secure_cookies: bool = True, failures: int = 5, telemetry: str | None = None
) -> Console:
    """A console; with ``broker_port`` None its link points at a port nothing listens on (broker down).
    ``telemetry``: the telemetry store's URL (default: telemetry.db in the home)."""
    link = MqttLink(LinkSettings(port=broker_port or free_port(), client_id="console-test", clean_start=True))
    c = build(
        h.registry,
        link,
        Topics(),
        lambda: load_signing_key(h.key_dir),
        telemetry or h.path / "telemetry.db",
        secure_cookies=secure_cookies,
    )
    c.limiter = LoginLimiter(failures=failures, window_s=60.0)
    if broker_port is not None:
        link.start()
    return c


def with_report(bundle: Path, out: Path, *, verdict: str = "VERIFIED") -> Path:
    """A copy of ``bundle`` with the build report ``train`` writes beside it (report.png drawn by the
    build pipeline's own report code, report.json in the inspection build's shape)."""
    import json
    import shutil

    import numpy as np

    from converters import report
    from converters.metrics import evaluate

    shutil.copytree(bundle, out)
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.93, truth, 1 - truth)
    ev = evaluate(truth, pred, ["ok", "spot"])
    report.write_png(out / "report" / "report.png", ev, f"tiny: held-out evaluation ({verdict})")
    doc = {
        "verdict": verdict,
        "auroc": 0.9712,
        "gate": {"passed": True, "failures": [], "notes": ["escape measured on 41 defects"]},
        "warnings": ["only 41 defect examples: the escape interval is wide"],
        "evaluation": ev.to_dict(),
    }
    (out / "report" / "report.json").write_text(json.dumps(doc))
    return out


# the delivery tests' real signed bundles (tiny v1-v3) and camera frames
from tests.delivery.conftest import bundles, frames  # noqa: E402

__all__ = ["OPERATOR", "VIEWER", "Home", "bundles", "frames", "make_console", "with_report"]
