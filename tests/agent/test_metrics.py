"""GET /metrics of a real agent, read by software we did not write: the parser of the official
Prometheus Python client (``prometheus-client``) and Debian's ``promtool check metrics``.

Conventions checked: every counter ends in ``_total`` and has its known series from the first scrape
(0, not missing); every state gauge has one 0/1 series per state, exactly one of them 1, so no series
vanishes when the state changes; an uncertain verdict is not counted twice in one sum; the HELP text of
each family says what its samples count; the API's requests and errors are counted per endpoint; the
process's CPU and memory are there."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.counters import AgentCounters
from edge_agent.runtime import Agent, AgentState
from edge_agent.source_state import SourceState
from edge_agent.status import AGENT_STATES, prometheus_text, read_status
from edge_agent.verdict import Verdict
from tests.agent.helpers import make_config, wait_for


def scrape(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(fam: Any, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in fam.samples}


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is not installed: apt-get install -y prometheus (Debian ships it there)"
    return subprocess.run(
        [tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )


def verdict(v: str, uncertain: bool = False, label: str = "ok") -> Verdict:
    return Verdict(0, v, label, 0.5, uncertain, "tiny", 1, 1.0, 0.0)


def test_agent_states_listed_for_the_gauge_are_the_runtimes_states() -> None:
    assert set(AGENT_STATES) == {s.value for s in AgentState}


def test_a_fresh_agent_exports_every_counter_from_zero_and_every_state(tmp_path: Path, image_folder: Path) -> None:
    agent = Agent(make_config(tmp_path, {"kind": "folder", "path": str(image_folder)}))  # no model, not started
    text = prometheus_text(agent.counters())
    fams = families(text)
    assert values(fams["edgeline_verdicts"], "verdict") == {"ok": 0, "defect": 0, "unknown": 0}
    assert values(fams["edgeline_dropped"], "reason") == {"no_model": 0, "error": 0, "queue_full": 0}
    assert values(fams["edgeline_errors"], "kind") == {"PreprocessError": 0, "ModelLoadError": 0}
    endpoints = {"/predict", "/status", "/metrics", "/healthz", "/v2", "other"}
    assert set(values(fams["edgeline_api_requests"], "endpoint")) == endpoints
    assert set(values(fams["edgeline_api_errors"], "endpoint")) == endpoints
    assert fams["edgeline_uncertain_verdicts"].samples[0].value == 0
    assert fams["edgeline_model_loaded"].samples[0].value == 0
    camera = values(fams["edgeline_camera_state"], "state")
    assert set(camera) == {s.value for s in SourceState} and camera["IDLE"] == 1 and sum(camera.values()) == 1
    state = values(fams["edgeline_agent_state"], "state")
    assert set(state) == {s.value for s in AgentState} and state["CREATED"] == 1 and sum(state.values()) == 1
    for fam in fams.values():
        assert fam.documentation, f"{fam.name} has no HELP"
        # without a model there are no classes; without sinks or plugins, nothing to count per sink or plugin
        assert fam.samples or fam.name in ("edgeline_class", "edgeline_plugin_errors"), f"{fam.name} has no series"
    check = promtool(text)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr


def test_an_uncertain_verdict_is_counted_once_and_unknown_is_a_verdict_like_the_others() -> None:
    c = AgentCounters()
    for v in (verdict("ok"), verdict("ok", uncertain=True), verdict("defect", label="dent"), verdict("unknown")):
        c.record(v)
    c.record(verdict("review-later"))  # a verdict value nobody listed is still counted
    snap = c.snapshot()
    doc = {"frames": {"inspected": snap["inspected"]}, "verdicts": snap["verdicts"]}
    fams = families(prometheus_text(doc))
    by = values(fams["edgeline_verdicts"], "verdict")
    assert by == {"ok": 2, "defect": 1, "unknown": 1, "review-later": 1}
    assert sum(by.values()) == snap["inspected"] == 5
    assert fams["edgeline_uncertain_verdicts"].samples[0].value == 1
    assert "uncertain" not in snap["verdicts"]["by_verdict"]


def test_metrics_of_a_running_agent_with_its_api_traffic_and_process_figures(
    tmp_path: Path, image_folder: Path, tiny_bundle: Path, trust_path: Path
) -> None:
    cfg = make_config(
        tmp_path,
        {"kind": "folder", "path": str(image_folder), "loop": True, "max_fps": 100},
        model={"bundle": str(tiny_bundle), "trust_file": str(trust_path)},
        api={"enabled": True, "port": 0},
    )
    agent = Agent(cfg)
    agent.start()
    try:
        assert wait_for(lambda: agent.counters()["frames"]["inspected"] >= 20, 20)
        url = agent.api.url
        assert scrape(f"{url}/status")[0] == 200
        assert scrape(f"{url}/healthz")[0] == 200
        assert scrape(f"{url}/no-such-page")[0] == 404
        assert scrape(f"{url}/metrics")[0] == 200
        req = urllib.request.Request(f"{url}/predict", data=b"not an image", method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code in (400, 422)
        code, text = scrape(f"{url}/metrics")
        assert code == 200
    finally:
        agent.stop()
    fams = families(text)
    requests = values(fams["edgeline_api_requests"], "endpoint")
    errors = values(fams["edgeline_api_errors"], "endpoint")
    # this scrape is answered after it was rendered: the earlier one is counted, this one not yet
    assert requests == {"/status": 1, "/healthz": 1, "other": 1, "/metrics": 1, "/predict": 1, "/v2": 0}, requests
    assert errors == {"/status": 0, "/healthz": 0, "other": 1, "/metrics": 0, "/predict": 1, "/v2": 0}, errors
    inspected = fams["edgeline_inspected"].samples[0].value
    assert sum(values(fams["edgeline_verdicts"], "verdict").values()) == inspected
    assert sum(values(fams["edgeline_class"], "label").values()) == inspected
    labels = set(values(fams["edgeline_class"], "label"))
    assert labels >= set(agent.current_model.manifest.labels if agent.current_model else ())
    assert fams["edgeline_model_loaded"].samples[0].value == 1
    assert values(fams["edgeline_agent_state"], "state")["RUNNING"] == 1
    assert fams["process_resident_memory_bytes"].samples[0].value > 10 * 2**20
    assert fams["process_cpu_seconds"].samples[0].value > 0
    assert fams["process_start_time_seconds"].samples[0].value > 1.6e9
    assert fams["process_open_fds"].samples[0].value >= 3
    check = promtool(text)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
    # the status file carries the agent's own process figures, for `agent status --prometheus`
    doc = read_status(tmp_path / "status.json")
    assert doc["process"]["resident_memory_bytes"] > 10 * 2**20 and doc["pid"] == os.getpid()
    doc["pid"] = -1  # as read by another process: the figures come from the file
    assert families(prometheus_text(doc))["process_cpu_seconds"].samples[0].value == doc["process"]["cpu_seconds"]


def test_open_inference_protocol_requests_count_under_v2() -> None:
    from edge_agent.counters import AgentCounters

    c = AgentCounters()
    c.api_request("/v2/models/tiny/infer", 200)
    c.api_request("/v2/health/ready", 503)
    c.api_request("/v2", 200)
    c.api_request("/v2x", 404)
    assert c.api_by_endpoint == {"/v2": 3, "other": 1}
    assert c.api_errors_by_endpoint == {"/v2": 1, "other": 1}
