"""The console in headless Chromium (Debian's, through Playwright; no browser is downloaded) against
a real Mosquitto, a real registry and two real agent processes (``edgeline agent run``).

One journey, to keep the browser and the agents started once: log in, see the devices arrive, deploy
from the form and watch the rollout reach COMMITTED on every device without a reload, start one that
cannot finish, pause, resume and abort it, see the alerts appear, and the refusals: a viewer has no
deploy button and its request is refused, a forged request without the CSRF token is refused, a
wrong password is refused and then rate-limited. Each page is photographed at 1400 px into
docs/console/."""

from __future__ import annotations

import hashlib
import shutil
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.telemetry.alerts import AlertEngine
from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import KeyPaths, load_signing_key
from edge_agent.preprocessing import stat_edges
from edgeline.console.server import Bind, ConsoleServer
from edgeline.core.protocol.manifest import Histogram, Reference
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.telemetry import CONF_BINS, STAT_BINS, TelemetryWindow
from edgeline.demo.broker import MosquittoBroker
from firmware_configs.writer import render_toml
from tests.console.conftest import OPERATOR, VIEWER, Home, make_console, with_report
from tests.delivery.agent_proc import AgentProcess, write_frames
from tests.delivery.conftest import BuiltBundle, wait_for
from tests.factories import write_tiny_bundle

playwright = pytest.importorskip("playwright.sync_api")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
WIDTH = 1400


@dataclass
class StationAgent(AgentProcess):
    """An agent process that says which line it is on and what kind of station it is."""

    groups: tuple[str, ...] = ()
    hardware_class: str = "generic"

    def config_path(self, with_faults: bool) -> Path:
        path = super().config_path(with_faults)
        sections = tomllib.loads(path.read_text("utf-8"))
        sections["device"] |= {"groups": list(self.groups), "hardware_class": self.hardware_class}
        path.write_text(render_toml(sections), "utf-8")
        return path


@pytest.fixture
def agents(
    mosquitto: MosquittoBroker, key_dir: Path, frames: list[Any], tmp_path: Path
) -> Iterator[list[AgentProcess]]:
    folder = write_frames(tmp_path / "frames", frames)
    updater = {"trial_frames": 3, "trial_timeout_s": 30.0, "trial_latency_budget_ms": 2000.0, "min_free_bytes": 0}
    stations = (("cell-1", "line-a", "x86-ipc-station"), ("cell-2", "line-b", "arm64-small"))
    trust = KeyPaths(key_dir).trust
    procs: list[AgentProcess] = [
        StationAgent(d, tmp_path / d, mosquitto.port, trust, folder, dict(updater), {}, groups=(g,), hardware_class=hw)
        for d, g, hw in stations
    ]
    for p in procs:
        p.start(with_faults=False)
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()


def _hist(centre: int) -> list[int]:
    return [max(0, 40 - 12 * abs(b - centre)) for b in range(STAT_BINS)]


def line_reference() -> Reference:
    """What the training set looked like: the undarkened line's brightness and contrast."""
    return Reference(
        input_stats={
            name: Histogram(edges=tuple(float(x) for x in stat_edges(name)), freqs=tuple(c / sum(h) for c in h))
            for name, h in (("brightness", _hist(11)), ("contrast", _hist(8)))
        }
    )


def field_window(device: str, group: str, i: int, dark: bool) -> TelemetryWindow:
    """A telemetry window as a device sends it: histograms of its input statistics (a darkened line
    shifts brightness down) and the device's own drift verdicts."""
    hist = _hist(6 if dark else 11)
    contrast = _hist(8)
    return TelemetryWindow.model_validate(
        {
            "key": uuid.uuid4().hex,
            "device": hashlib.md5(device.encode()).hexdigest(),
            "group": group,
            "model": {"name": "tiny", "version": 1, "sha256": "c" * 64},
            "start": 1_700_000_000.0 + 60 * i,
            "end": 1_700_000_060.0 + 60 * i,
            "frames": 100,
            "class_counts": {"ok": 97, "spot": 3},
            "confidence": [0] * (CONF_BINS - 2) + [10, 90],
            "input_stats": {"brightness": hist, "contrast": contrast},
            "stats_frames": sum(hist),
            "drift": {"brightness": {"psi": 1.4 if dark else 0.02, "threshold": 0.25, "drifted": dark}},
        }
    )


@pytest.fixture
def browser() -> Iterator[Any]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: run .ci/run, or apt-get install -y chromium")
    with playwright.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def wait_js(page: Any, expression: str, timeout_s: float = 30.0) -> None:
    """Poll ``expression`` in the page. (``wait_for_function`` evaluates a string with ``eval`` inside
    the page, which the console's Content-Security-Policy refuses, as it should.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout_s} s: {expression}")
        page.wait_for_timeout(100)


def act(page: Any, action: str) -> None:
    """Click a rollout's action button and check the console's answer (the flash after the redirect)."""
    page.click(f"#rollouts button[data-action={action}]")
    flash = page.wait_for_selector(f".flash:has-text('{action}')").inner_text()
    assert "refused" not in flash, flash


def log_in(page: Any, base: str, user: tuple[str, str]) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", user[0])
    page.fill("input[name=password]", user[1])
    page.click("button[type=submit]")


def test_the_console_in_a_browser(
    home: Home,
    mosquitto: MosquittoBroker,
    agents: list[AgentProcess],
    bundles: dict[int, BuiltBundle],
    browser: Any,
    tmp_path: Path,
) -> None:
    trust = TrustStore.load(KeyPaths(home.key_dir).trust)
    v1 = write_tiny_bundle(tmp_path / "v1", load_signing_key(home.key_dir), version=1, reference=line_reference())
    home.registry.add_bundle(v1, trust, note="first build")
    v2 = with_report(bundles[2].path, tmp_path / "v2")  # its build report, as train writes it beside the bundle
    home.registry.add_bundle(v2, trust, note="retrained on line-b", parent=1)
    home.registry.promote("tiny", 1, "production")
    home.registry.promote("tiny", 2, "staging")
    console = make_console(home, mosquitto.port, failures=3)
    server = ConsoleServer(console, Bind("127.0.0.1", 0)).start()
    base = server.url
    try:
        ctx = browser.new_context(viewport={"width": WIDTH, "height": 900})
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{base}/login")
        shot(page, "login")
        log_in(page, base, OPERATOR)
        page.wait_for_url(f"{base}/")
        # the devices arrive on the open page as their birth messages do
        page.evaluate("window.loaded = 'fleet'")
        for d in ("cell-1", "cell-2"):
            page.wait_for_selector(f"#dev-{d}[data-status=online]", timeout=40_000)
        assert page.evaluate("window.loaded") == "fleet"  # no reload

        # deploy from the form, then watch it commit on every device without reloading
        page.goto(f"{base}/rollouts")
        page.select_option("select[name=ref]", "tiny@1")
        page.fill("input[name=target]", "device:cell-1,cell-2")
        page.fill("input[name=waves]", "1,all")
        page.click("#deploy-button")
        page.wait_for_selector(".flash:has-text('started')")
        first = page.url.rsplit("/", 1)[1]
        page.evaluate("window.loaded = 'rollout'")
        page.wait_for_selector("#rollouts tr[data-status=completed]", timeout=45_000)
        badges = page.locator(".waves td.status .badge").all_inner_texts()
        assert badges == ["committed", "committed"], badges
        assert page.evaluate("window.loaded") == "rollout" and page.evaluate("window.edgelinePatches") > 0
        shot(page, "rollout")
        page.goto(f"{base}/")
        page.wait_for_selector("#dev-cell-2 td.model:has-text('tiny v1')")
        page.wait_for_selector("#fleet-summary table.lines a:has-text('line-b')")
        assert page.inner_text("#dev-cell-1 td.hw").startswith("x86-ipc-station")
        shot(page, "fleet")
        # one line's page: the heartbeats of the other line's devices patch nothing into it
        page.goto(f"{base}/?group=line-b")
        page.wait_for_selector("#dev-cell-2")
        wait_js(page, "window.edgelinePatches > 4")  # both devices beat every second
        assert page.locator("#fleet-body tr").count() == 1 and page.locator("#dev-cell-1").count() == 0
        assert page.inner_text("#fleet-summary a.here") == "line-b"

        # a rollout that cannot finish (one device never answers): pause, resume and abort it from its page
        page.goto(f"{base}/rollouts")
        page.select_option("select[name=ref]", "tiny@2")
        page.fill("input[name=target]", "device:cell-1,ghost-9")
        page.click("#deploy-button")
        page.wait_for_selector(".flash:has-text('started')")
        rid = page.url.rsplit("/", 1)[1]
        page.wait_for_selector(".waves tr[data-device=cell-1] .badge:has-text('committed')", timeout=30_000)
        act(page, "pause")
        page.wait_for_selector("#rollouts tr[data-status=paused] button[data-action=resume]")
        act(page, "resume")
        page.wait_for_selector("#rollouts tr[data-status=running] button[data-action=abort]")
        act(page, "abort")
        page.wait_for_selector("#rollouts tr[data-status=aborted]")
        page.wait_for_selector(".waves tr[data-device=cell-1] .badge:has-text('rolled_back')", timeout=30_000)

        # alerts appear on the open page: the ingest's alert engine records the episodes
        page.goto(f"{base}/drift")
        page.evaluate("window.loaded = 'drift'")
        store = TelemetryStore(home.path / "telemetry.db")
        engine = AlertEngine(store)
        rows = console.registry.store.list_rollouts()
        engine.check_rollouts((r.id, r.status, str(r.doc.get("reason", ""))) for r in rows)
        for i in range(8):
            for device, group in (("cell-1", "line-a"), ("cell-2", "line-b")):
                w = field_window(device, group, i, dark=group == "line-b" and i >= 3)
                store.add(w)
                engine.on_window(w)
        page.wait_for_selector(f"#alerts-body tr[data-state=firing]:has-text('{rid}')", timeout=10_000)
        page.wait_for_selector("#alerts-body tr[data-state=firing]:has-text('input drift')", timeout=10_000)
        page.wait_for_selector("#alert-count.alerts-on")
        assert page.evaluate("window.loaded") == "drift"
        page.goto(f"{base}/drift?model=tiny")
        page.wait_for_selector("img.plot")
        wait_js(page, "document.querySelector('img.plot').naturalWidth > 0")
        assert page.locator("td .badge:has-text('DRIFT')").count() == 1  # line-b's brightness against the reference
        shot(page, "drift")
        page.goto(f"{base}/models")
        wait_js(page, "document.querySelector('details.report[open] img.plot').naturalWidth > 0")
        assert "verdict: VERIFIED" in page.inner_text("details.report[open] summary")
        shot(page, "models")
        for name, path in (("rollouts", "/rollouts"), ("audit", "/audit")):
            page.goto(f"{base}{path}")
            shot(page, name)
        audit = page.inner_text("#audit")
        for action in ("deploy", "pause", "resume", "abort"):
            assert action in audit, action
        assert OPERATOR[0] in audit

        # a forged request: the operator's cookie, no CSRF token
        forged = page.request.post(f"{base}/rollouts/{first}/rollback", form={"x": "1"})
        assert forged.status == 403

        # roll the completed rollout back from its page (its devices had no model before it)
        page.goto(f"{base}/rollouts/{first}")
        act(page, "rollback")
        page.wait_for_selector("#rollouts tr[data-status=aborted]:has-text('rollback requested')")
        page.goto(f"{base}/audit")
        assert "rollback" in page.inner_text("#audit")

        # a viewer: no deploy button, no action buttons, and the endpoint refuses even with its token
        vctx = browser.new_context(viewport={"width": WIDTH, "height": 900})
        vpage = vctx.new_page()
        log_in(vpage, base, VIEWER)
        vpage.wait_for_url(f"{base}/")
        vpage.goto(f"{base}/rollouts")
        assert vpage.locator("#deploy-button").count() == 0
        assert vpage.locator("#rollouts button").count() == 0
        token = vpage.get_attribute("form[action='/logout'] input[name=csrf]", "value")
        refused = vpage.request.post(f"{base}/deploy", form={"csrf": token, "ref": "tiny@1", "target": "device:cell-1"})
        assert refused.status == 403
        shot(vpage, "rollouts-viewer")
        vctx.close()

        # a wrong password is refused, and after three the right one is too (rate limit)
        lctx = browser.new_context(viewport={"width": WIDTH, "height": 700})
        lpage = lctx.new_page()
        for _ in range(3):
            log_in(lpage, base, (OPERATOR[0], "not-the-password"))
            lpage.wait_for_selector(".error:has-text('Wrong user name or password')")
        log_in(lpage, base, OPERATOR)
        lpage.wait_for_selector(".error:has-text('Too many failed logins')")
        assert lpage.url.endswith("/login")
        lctx.close()
        ctx.close()
        assert wait_for(lambda: all(p.alive for p in agents), 1)
    finally:
        server.stop()
        console.live.link.stop()
