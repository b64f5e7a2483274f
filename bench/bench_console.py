"""The console's fleet page with 1,000 simulated devices on a real Mosquitto.

Each simulated device is one retained ``state`` message (as a real agent's birth and heartbeats
are), published before the console starts, so the console learns the fleet the way it does after a
restart: from the broker's retained states, on its one link. The console runs as the real command
(``edgeline console serve``, its own process); headless Chromium (Debian's, through Playwright) logs
in and opens the fleet page.

* time to first render: from the navigation to the fleet page until its 1,000 rows are in the DOM
  (and the load event), with the page's size and the server's response time;
* update latency: one device changes state (a new retained state with a marker in it); from just
  before the publish until the page's row shows the marker (a MutationObserver stamps it; the
  browser and this script share the machine's clock). ``--samples`` changes, one at a time, spaced
  so each is measured alone; reported as median, p90 and max;
* burst: every device changes at once; time until the last row shows its marker.

    python bench/bench_console.py [--devices 1000] [--samples 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cloud_registry.registry import Registry, RegistryPaths
from edgeline.console.accounts import add_user
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.delivery import DeviceState, UpdaterState
from edgeline.core.protocol.model_ref import ModelRef
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit  # noqa: E402

USER = ("bench", "bench-password-1")


def state(i: int, marker: str = "") -> DeviceState:
    return DeviceState(
        device_id=f"dev-{i:04d}",
        online=True,
        ts=time.time(),
        heartbeat_s=600.0,
        hardware_class="x86-ipc",
        groups=(f"line-{i % 20:02d}",),
        agent_version="0.1.0",
        model=ModelRef(name="inspection", version=3, sha256="ab" * 32),
        slot="A",
        updater=UpdaterState.COMMITTED,
        health="ok",
        last_error=marker,
    )


def publish(link: MqttLink, topics: Topics, states: list[DeviceState]) -> None:
    mids = [link.publish(topics.device_state(s.device_id), s.to_bytes(), qos=1, retain=True) for s in states]
    for mid in mids:
        link.wait_published(mid, 30.0)


OBSERVER = """() => {
  window.stamps = {};
  const seen = (node) => {
    const row = node.closest ? node.closest('tr') : null;
    if (!row) return;
    const err = row.querySelector('td.err');
    if (err && err.textContent.startsWith('probe-') && !(err.textContent in window.stamps))
      window.stamps[err.textContent] = Date.now();
  };
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) if (n.nodeType === 1) seen(n);
  }).observe(document.getElementById('fleet-body'), {childList: true, subtree: true});
}"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=40)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    broker = MosquittoBroker(tmp / "mosquitto")
    broker.start()
    topics = Topics()
    link = MqttLink(LinkSettings(port=broker.port, client_id="bench-fleet", clean_start=True))
    link.connect(10)
    console: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.perf_counter()
        publish(link, topics, [state(i) for i in range(args.devices)])
        publish_s = time.perf_counter() - t0
        paths = RegistryPaths(tmp / "home")
        reg = Registry.open(paths.store_url, paths.artifacts_url)
        add_user(reg.store, *USER, "viewer")
        reg.close()
        port = free_port()
        cmd = [sys.executable, "-m", "edgeline.cli.main", "console", "serve", "--home", str(tmp / "home")]
        cmd += ["--bind", f"127.0.0.1:{port}", "--broker-port", str(broker.port), "--keys", str(tmp / "keys")]
        log = open(tmp / "console.log", "wb")  # noqa: SIM115 - handed to the child
        console = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if not wait_port("127.0.0.1", port, 30):
            raise SystemExit("the console did not start: " + (tmp / "console.log").read_text())
        time.sleep(2.0)  # its link collects the retained states
        base = f"http://127.0.0.1:{port}"
        exe = shutil.which("chromium")
        if exe is None:
            raise SystemExit("chromium is not installed (apt-get install -y chromium)")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, headless=True)
            # the measuring probes are evaluated strings, which the console's CSP forbids to its own pages
            page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
            page.goto(f"{base}/login")
            page.fill("input[name=username]", USER[0])
            page.fill("input[name=password]", USER[1])
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            renders = []
            for _ in range(3):
                t = time.perf_counter()
                resp = page.goto(f"{base}/")
                page.wait_for_function(f"document.querySelectorAll('#fleet-body tr').length >= {args.devices}")
                renders.append(time.perf_counter() - t)
            timing = page.evaluate(
                "() => { const n = performance.getEntriesByType('navigation')[0];"
                " return {ttfb_ms: n.responseStart - n.requestStart, load_ms: n.loadEventEnd - n.startTime,"
                " bytes: n.transferSize, decoded: n.decodedBodySize}; }"
            )
            html_bytes = len(resp.body()) if resp is not None else 0
            page.evaluate(OBSERVER)
            page.wait_for_timeout(500)  # the event stream is open
            lat = []
            for k in range(args.samples):
                i = (k * 37) % args.devices
                marker = f"probe-{k}"
                sent = time.time()
                publish(link, topics, [state(i, marker)])
                page.wait_for_function(f"'{marker}' in window.stamps", timeout=10_000)
                lat.append(page.evaluate(f"window.stamps['{marker}']") / 1000 - sent)
                page.wait_for_timeout(150)
            sent = time.time()
            publish(link, topics, [state(i, f"probe-burst-{i}") for i in range(args.devices)])
            page.wait_for_function(
                f"Object.keys(window.stamps).filter(k => k.startsWith('probe-burst-')).length >= {args.devices}",
                timeout=60_000,
            )
            burst = max(v for k, v in page.evaluate("window.stamps").items() if k.startswith("probe-burst-"))
            browser.close()
        lat.sort()
        results: dict[str, Any] = {
            "devices": args.devices,
            "publish_retained_states_s": round(publish_s, 3),
            "first_render_s": {"median": round(statistics.median(renders), 3), "all": [round(r, 3) for r in renders]},
            "navigation": timing,
            "html_bytes": html_bytes,
            "update_latency_ms": {
                "samples": len(lat),
                "median": round(1000 * statistics.median(lat), 1),
                "p90": round(1000 * lat[int(0.9 * (len(lat) - 1))], 1),
                "max": round(1000 * lat[-1], 1),
            },
            "burst_all_devices_s": round(burst / 1000 - sent, 3),
            "command": " ".join(
                ["python", "bench/bench_console.py", f"--devices {args.devices}", f"--samples {args.samples}"]
            ),
        }
        return emit("console", results)
    finally:
        if console is not None:
            console.terminate()
            console.wait(10)
        link.stop()
        broker.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
