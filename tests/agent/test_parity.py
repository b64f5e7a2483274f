"""The live loop, the local prediction API and batch prediction give the same verdicts on the same
images, because they share one path: frame -> Preprocessor -> LoadedModel -> decide."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from edge_agent.inference import load_and_check
from edge_agent.runtime import Agent
from edgeline.cli.main import cli
from edgeline.core.protocol.signing import TrustStore
from tests.agent.helpers import make_config, verdicts, wait_for

KEYS = ("verdict", "label", "confidence", "uncertain", "model", "model_version")


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_live_loop_api_and_batch_predict_agree_on_every_image(
    tmp_path: Path, image_folder: Path, tiny_bundle: Path, trust_path: Path
) -> None:
    # 1. the live loop over the folder (looping, so it keeps serving the API meanwhile)
    cfg = make_config(
        tmp_path,
        {"kind": "folder", "path": str(image_folder), "loop": True, "max_fps": 200},
        model={"bundle": str(tiny_bundle), "trust_file": str(trust_path)},
        api={"enabled": True, "port": 0},
    )
    agent = Agent(cfg)
    agent.start()
    try:
        assert wait_for(lambda: agent.counters()["frames"]["inspected"] >= 40, 20)
        url = agent.api.url
        # 2. the prediction API, same images as encoded files
        api = {}
        for img in sorted(image_folder.iterdir()):
            code, doc = post(f"{url}/predict", img.read_bytes())
            assert code == 200, doc
            api[img.name] = doc
        code, text = get(f"{url}/metrics")
        assert code == 200 and 'edgeline_inspected_total{device="dev-1"} ' in text
        code, text = get(f"{url}/status")
        assert code == 200 and json.loads(text)["api"]["requests"] == 40
    finally:
        agent.stop()
    live = {v["ref"]: v for v in verdicts(tmp_path / "verdicts.jsonl") if v["frame_id"] < 40}
    assert len(live) == 40
    # 3. batch prediction, both output formats
    runner = CliRunner()
    res = runner.invoke(
        cli,
        ["predict", "--bundle", str(tiny_bundle), "--trust", str(trust_path), "--format", "jsonl", str(image_folder)],
    )
    assert res.exit_code == 0, res.output
    batch = {r["ref"]: r for r in map(json.loads, res.stdout.splitlines())}
    res = runner.invoke(cli, ["predict", "--bundle", str(tiny_bundle), "--trust", str(trust_path), str(image_folder)])
    assert res.exit_code == 0, res.output
    rows = {r["ref"]: r for r in csv.DictReader(io.StringIO(res.stdout))}
    assert set(live) == set(api) == set(batch) == set(rows)
    for ref in live:
        assert {k: live[ref][k] for k in KEYS} == {k: api[ref][k] for k in KEYS} == {k: batch[ref][k] for k in KEYS}
        assert rows[ref]["verdict"] == live[ref]["verdict"] and rows[ref]["label"] == live[ref]["label"]
        assert abs(float(rows[ref]["confidence"]) - live[ref]["confidence"]) < 1e-6
    assert {v["verdict"] for v in live.values()} == {"ok", "defect"}


def test_batch_predict_on_a_video_matches_the_live_loop(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust: TrustStore, trust_path: Path
) -> None:
    cfg = make_config(tmp_path, {"kind": "file", "path": str(video_file)})
    Agent(cfg, model=load_and_check(tiny_bundle, trust)).run()
    live = verdicts(tmp_path / "verdicts.jsonl")
    out = tmp_path / "pred.jsonl"
    res = CliRunner().invoke(
        cli,
        [
            "predict",
            "--bundle",
            str(tiny_bundle),
            "--trust",
            str(trust_path),
            "--format",
            "jsonl",
            "-o",
            str(out),
            str(video_file),
        ],
    )
    assert res.exit_code == 0, res.output
    batch = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(b["ref"], *(b[k] for k in KEYS)) for b in batch] == [(v["ref"], *(v[k] for k in KEYS)) for v in live]


def test_prediction_api_refuses_bad_requests(
    tmp_path: Path, image_folder: Path, tiny_bundle: Path, trust: TrustStore
) -> None:
    cfg = make_config(
        tmp_path,
        # looping, so the agent (and its API) does not stop when the folder ends, mid-test
        {"kind": "folder", "path": str(image_folder), "loop": True, "max_fps": 50},
        api={"enabled": True, "port": 0, "max_body_bytes": 65536},
    )
    agent = Agent(cfg)  # no model yet
    agent.start()
    try:
        url = agent.api.url
        assert agent.api.address[0] == "127.0.0.1"
        png = next(iter(sorted(image_folder.iterdir()))).read_bytes()
        assert post(f"{url}/predict", png)[0] == 503  # no model
        assert get(f"{url}/healthz")[0] == 503
        agent.activate(load_and_check(tiny_bundle, trust))
        assert get(f"{url}/healthz")[0] == 200
        code, doc = post(f"{url}/predict", b"not an image at all")
        assert code == 400 and "not a decodable image" in doc["error"]
        code, doc = post(f"{url}/predict", png[: len(png) // 3])  # truncated PNG
        assert code == 400
        code, doc = post(f"{url}/predict", b"\0" * 100_000)  # over the configured limit
        assert code == 413 and "exceeds" in doc["error"]
        assert get(f"{url}/nothing")[0] == 404
        code, doc = post(f"{url}/predict", png)
        assert code == 200 and doc["model_version"] == 1
    finally:
        agent.stop()


def test_predict_reports_unreadable_images_and_exits_non_zero(
    tmp_path: Path, image_folder: Path, tiny_bundle: Path, trust_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for img in sorted(image_folder.iterdir())[:3]:
        (folder / img.name).write_bytes(img.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "p.csv"
    res = CliRunner().invoke(
        cli, ["predict", "--bundle", str(tiny_bundle), "--trust", str(trust_path), "-o", str(out), str(folder)]
    )
    assert res.exit_code == 1
    assert "1 of 4 items could not be inspected" in res.output and "broken.png" in res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and sum(bool(r["error"]) for r in rows) == 1


def test_predict_refuses_a_bundle_that_does_not_verify(
    tmp_path: Path, image_folder: Path, bad_bundle: Path, trust_path: Path
) -> None:
    res = CliRunner().invoke(
        cli, ["predict", "--bundle", str(bad_bundle), "--trust", str(trust_path), str(image_folder)]
    )
    assert res.exit_code == 1 and "self-test" in res.output
    notvideo = tmp_path / "x.avi"
    notvideo.write_bytes(b"\0" * 100)
    res = CliRunner().invoke(cli, ["predict", "--bundle", str(bad_bundle), "--trust", str(trust_path), str(notvideo)])
    assert res.exit_code == 1


def test_verdict_records_carry_every_verdict_field(
    tiny_bundle: Path, trust: TrustStore, line_frames: tuple[list[Any], list[str]]
) -> None:
    from edge_agent.inference import inspect_frame, verdict_record

    result = inspect_frame(load_and_check(tiny_bundle, trust), line_frames[0][1], 5, ts=12.5)
    rec = verdict_record(result, "dev-1", "part-5")
    assert {k: rec[k] for k in result.verdict.to_dict()} == result.verdict.to_dict()
    assert rec["sha256"] == result.model_sha256 and rec["ref"] == "part-5" and rec["ts"] == 12.5
