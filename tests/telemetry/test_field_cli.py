"""``edgeline field report`` (table, --json, --png, bad options) and the field rates in ``edgeline
drift``, on a real SQLite telemetry store."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cloud_registry.telemetry.store import TelemetryStore
from edgeline.cli.main import cli
from tests.telemetry.field_helpers import DAY0, cells, window


def _db(tmp_path: Path) -> Path:
    path = tmp_path / "telemetry.db"
    store = TelemetryStore(path)
    for i, (dev, k) in enumerate((("a" * 32, 30), ("b" * 32, 4), ("c" * 32, 5))):
        fb = cells(pass_defect={0: k}, reject_defect={9: 100 - k}, pass_ok={0: 500}, reject_ok={9: 3})
        store.add(
            window(
                device=dev,
                start=DAY0 + (8 + 8 * i) * 3600,
                score_pass={0: 2000},
                score_reject={9: 100},
                feedback=[(1, fb, None)],
                brightness=0.2 if i == 0 else 0.5,
            )
        )
    # v2: a little feedback only
    store.add(window(version=2, score_pass={0: 300}, feedback=[(2, cells(pass_defect={0: 1}, pass_ok={0: 9}), None)]))
    store.close()
    return path


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def test_field_report_table_json_and_png(tmp_path: Path) -> None:
    db = _db(tmp_path)
    code, out = run("field", "report", "--model", "plates", "--db", str(db), "--escape-limit", "0.05")
    assert code == 0, out
    assert "field rates of plates" in out and "escape (measured)" in out
    assert "worse slice" in out and "line aaaaaaaaaaaa: field escape 30.00% (30/100)" in out
    assert "v2 escape: too little feedback to tell: 1 defective parts with feedback" in out
    png = tmp_path / "field.png"
    code, out = run("field", "report", "-m", "plates", "--db", str(db), "--json", "--png", str(png), "--by", "line")
    assert code == 0, out
    doc = json.loads(out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and doc["png"] == str(png)
    rows = {(r["version"], r["scope"], r["value"]): r for r in doc["rows"]}
    assert set(rows) == {(1, "line", "a" * 12), (1, "line", "b" * 12), (1, "line", "c" * 12), (2, "line", "a" * 12)}
    a = rows[(1, "line", "a" * 12)]
    assert a["escape"]["events"] == 30 and a["escape"]["n"] == 100 and a["estimate"]["calibrated_on"] == 3 * 603
    code, out = run("field", "report", "-m", "plates", "--db", str(db), "--json", "--by", "shift", "--by", "light")
    scopes = {(r["scope"], r["value"]) for r in json.loads(out)["rows"]}
    assert ("shift", "06-14") in scopes and ("shift", "14-22") in scopes and ("light", "dark") in scopes


def test_field_report_refuses_bad_input_clearly(tmp_path: Path) -> None:
    db = _db(tmp_path)
    code, out = run("field", "report", "-m", "plates", "--db", str(tmp_path / "missing.db"))
    assert code != 0 and "no telemetry database" in out
    code, out = run("field", "report", "-m", "nope", "--db", str(db))
    assert code != 0 and "no windows of nope" in out
    code, out = run("field", "report", "-m", "plates", "--db", str(db), "--shifts", "6,x")
    assert code != 0 and "--shifts must be numbers" in out
    code, out = run("field", "report", "-m", "plates", "--db", str(db), "--shifts", "6,30")
    assert code != 0 and "distinct hours 0-23" in out
    code, out = run("field", "report", "-m", "plates", "--db", str(db), "--light-edges", "0.8,0.2")
    assert code != 0 and "0 < dark < bright < 1" in out
    code, out = run("field", "report", "-m", "plates", "--db", str(db), "--escape-limit", "1.5")
    assert code != 0


def test_drift_shows_measured_and_estimated_field_rates(tmp_path: Path) -> None:
    db = _db(tmp_path)
    png = tmp_path / "drift.png"
    code, out = run("drift", "--model", "plates", "--db", str(db), "--home", str(tmp_path), "--png", str(png))
    assert code == 0, out
    assert "field rates v1: escape measured 13.00% (39/300" in out and "estimated" in out
    code, out = run("drift", "-m", "plates", "--db", str(db), "--home", str(tmp_path), "--png", str(png), "--json")
    field = {f["version"]: f for f in json.loads(out)["field"]}
    assert field[1]["escape"]["events"] == 39 and field[1]["escape_est"] is not None
    assert field[2]["escape"]["status"] == "too_little"
