"""``edgeline dataset`` and ``edgeline train`` from the command line: success paths, --json, and a
non-zero exit with a clear message for every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from converters.synth import generate_dataset
from edgeline.cli.main import cli


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "ds"
    generate_dataset(out, per_class=8, seed=4, classes=("ok", "dent", "missing_hole"))
    return out


@pytest.mark.parametrize("cmd", [["dataset"], ["dataset", "synth"], ["dataset", "info"], ["train"], ["import"]])
def test_every_command_has_help(cmd: list[str]) -> None:
    res = run(*cmd, "--help")
    assert res.exit_code == 0 and len(res.output) > 200


def test_dataset_synth_images_and_video_json(tmp_path: Path) -> None:
    out, video = tmp_path / "ds", tmp_path / "line.avi"
    res = run(
        "dataset",
        "synth",
        str(out),
        "--per-class",
        "3",
        "--classes",
        "ok,scratch",
        "--brightness",
        "-40",
        "--video",
        str(video),
        "--video-parts",
        "2",
        "--json",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["counts"] == {"ok": 3, "scratch": 3} and doc["frames"] == 48 and doc["lighting"]["brightness"] == -40
    assert len(list((out / "scratch").glob("*.png"))) == 3
    assert video.exists() and Path(f"{video}.truth.csv").exists() and Path(f"{video}.truth.json").exists()
    info = run("dataset", "info", str(out), "--hash", "--json")
    assert json.loads(info.output)["counts"] == {"ok": 3, "scratch": 3} and len(json.loads(info.output)["sha256"]) == 64


def test_dataset_synth_rejects_bad_lighting(tmp_path: Path) -> None:
    res = run("dataset", "synth", str(tmp_path / "x"), "--contrast", "0")
    assert res.exit_code == 1 and "contrast" in res.output
    res = run("dataset", "synth", str(tmp_path / "x"), "--classes", "ok,burr")
    assert res.exit_code == 1 and "unknown class 'burr'" in res.output


def test_dataset_info_check_lists_unreadable_files(small_ds: Path, tmp_path: Path) -> None:
    ds = shutil.copytree(small_ds, tmp_path / "ds")
    (ds / "dent" / "dent_00001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    res = run("dataset", "info", str(ds), "--check")
    assert res.exit_code == 1 and "dent_00001.png: truncated PNG" in res.output


def test_train_json_then_verify(small_ds: Path, key_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = run(
        "train",
        str(small_ds),
        "--out",
        str(out),
        "--keys",
        str(key_dir),
        "--model",
        "classifier",
        "--estimator",
        "logreg",
        "--quantization",
        "float",
        "--name",
        "cli-line",
        "--version",
        "7",
        "--param",
        "clf__C=0.5",
        "--json",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["ok"] and doc["quantization"]["mode"] == "float" and doc["conversion"]["label_agreement"] == 1.0
    ver = run("verify", str(out), "--trust", str(key_dir / "trust.json"), "--json")
    summary = json.loads(ver.output)
    assert ver.exit_code == 0 and summary["name"] == "cli-line" and summary["version"] == 7
    manifest = json.loads((out / "manifest.json").read_text())["body"]
    assert manifest["lineage"]["training"]["params"]["clf__C"] == 0.5


@pytest.mark.parametrize(
    ("setup", "args", "code", "message"),
    [
        ("empty", [], 1, "empty dataset"),
        ("single", [], 1, "single class"),
        ("corrupt", [], 1, "ok_00002.png: not a PNG file"),
        ("ok", ["--estimator", "svm"], 2, "Invalid value for '--estimator'"),
        ("ok", ["--keys", "/nonexistent/keys"], 1, "edgeline keys init"),
        ("ok", ["--param", "nonsense"], 2, "is not key=value"),
        ("ok", ["--param", "clf__bogus=1"], 1, "has no parameter 'clf__bogus'"),
        ("ok", ["--ok-label", "good"], 1, "no class 'good'"),
        ("missing", [], 1, "does not exist"),
    ],
)
def test_train_bad_input_exits_non_zero_with_a_clear_message(
    small_ds: Path, key_dir: Path, tmp_path: Path, setup: str, args: list[str], code: int, message: str
) -> None:
    ds = tmp_path / "ds"
    if setup == "empty":
        ds.mkdir()
    elif setup == "single":
        shutil.copytree(small_ds / "ok", ds / "ok")
    elif setup != "missing":
        shutil.copytree(small_ds, ds)
    if setup == "corrupt":
        (ds / "ok" / "ok_00002.png").write_bytes(b"GIF89a not a png")
    kind = ["--model", "classifier"] if setup == "single" else []  # good parts alone train an anomaly model
    res = run(
        "train", str(ds), "--out", str(tmp_path / "b"), "--keys", str(key_dir), "--estimator", "logreg", *kind, *args
    )
    assert res.exit_code == code, res.output
    assert message in res.output
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_train_failure_in_json_mode_is_one_json_line(small_ds: Path, tmp_path: Path) -> None:
    res = run("train", str(small_ds), "--out", str(tmp_path / "b"), "--keys", str(tmp_path / "nokeys"), "--json")
    assert res.exit_code == 1
    doc = json.loads(res.output)
    assert doc == {"ok": False, "error": doc["error"], "kind": "SigningKeyError", "reason": "signing_key"}
    assert "keys init" in doc["error"]


def test_train_on_good_parts_alone_writes_an_anomaly_bundle_the_device_verifies(key_dir: Path, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    # 100 good parts: with 60 the model can afford only 24 components and finds ~78% of the planted
    # blemishes, which the line gate (80% by default) rightly refuses
    generate_dataset(ds, per_class=100, seed=21, classes=("ok", "dent"))
    shutil.rmtree(ds / "dent")
    res = run(
        "train",
        str(ds),
        "--out",
        str(tmp_path / "b"),
        "--keys",
        str(key_dir),
        "--max-false-reject",
        "10%",
        "--max-escape",
        "none",
        "--json",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["kind"] == "anomaly" and doc["line_gate"]["passed"] and doc["unverified"] == []
    assert any("UNMEASURED" in n for n in doc["line_gate"]["notes"])
    assert any("planted on held-out good parts" in n for n in doc["line_gate"]["notes"])
    ver = run("verify", str(tmp_path / "b"), "--trust", str(key_dir / "trust.json"), "--json")
    assert ver.exit_code == 0, ver.output


def test_train_refuses_a_bad_target_share(small_ds: Path, key_dir: Path, tmp_path: Path) -> None:
    res = run(
        "train", str(small_ds), "--out", str(tmp_path / "b"), "--keys", str(key_dir), "--max-false-reject", "150%"
    )
    assert res.exit_code == 2 and "between 0 and 100%" in res.output
