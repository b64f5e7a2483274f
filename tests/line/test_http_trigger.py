"""Triggers over the local API: ``POST /trigger`` (JSON), answered at once with the trigger id (202) or,
with ``wait_ms``, with the part's result (200), against a real agent in trigger mode."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from edge_agent.line.trigger_request import TriggerRequestError, parse_trigger
from tests.agent.helpers import read_jsonl, wait_for
from tests.line.conftest import MakeAgent


def _post(conn: http.client.HTTPConnection, body: bytes | str) -> tuple[int, dict[str, Any]]:
    data = body.encode() if isinstance(body, str) else body
    conn.request("POST", "/trigger", body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def _api(make_agent: MakeAgent, **kw: Any) -> tuple[Any, http.client.HTTPConnection]:
    agent = make_agent({}, api={"enabled": True, "port": 0}, **kw)
    host, port = agent.api.address
    return agent, http.client.HTTPConnection(host, port, timeout=10)


def test_a_trigger_request_is_checked_field_by_field() -> None:
    assert parse_trigger(b"") == parse_trigger(b"{}") == parse_trigger(b'{"part_id": null}')
    r = parse_trigger(b'{"part_id": "A-1042", "ts": 1764750000.5, "wait_ms": 250}')
    assert (r.part_id, r.ts, r.wait_ms) == ("A-1042", 1764750000.5, 250.0)
    bad = [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"part": "x"}', "unknown field"),
        (b'{"part_id": "two words"}', "part_id"),
        (b'{"part_id": "' + b"x" * 65 + b'"}', "part_id"),
        (b'{"part_id": 12}', "part_id"),
        (b'{"part_id": "caf\\u00e9"}', "part_id"),
        (b'{"ts": NaN}', "ts"),
        (b'{"ts": 1e999}', "ts"),
        (b'{"ts": true}', "ts"),
        (b'{"ts": -5}', "ts"),
        (b'{"wait_ms": 10001}', "wait_ms"),
        (b'{"wait_ms": "soon"}', "wait_ms"),
        (b"\xff\xfe", "not JSON"),
    ]
    for body, word in bad:
        with pytest.raises(TriggerRequestError, match=word) as info:
            parse_trigger(body)
        assert info.value.reason == "bad_trigger"
    with pytest.raises(TriggerRequestError, match="unknown field"):
        parse_trigger(b'{"wait_ms": 5}', allow_wait=False)


def test_post_trigger_waits_for_the_parts_result(make_agent: MakeAgent, tmp_path: Any) -> None:
    agent, conn = _api(make_agent)
    results = []
    for i in range(10):  # one keep-alive connection, one result per part, in order
        code, doc = _post(conn, json.dumps({"part_id": f"H-{i}", "wait_ms": 2000}))
        assert code == 200, doc
        results.append(doc)
    assert [r["part_id"] for r in results] == [f"H-{i}" for i in range(10)]
    assert all(r["state"] == "ok" and r["origin"] == "api" and r["verdict"] in ("ok", "defect") for r in results)
    assert len({r["result_id"] for r in results}) == 10
    # the same results reached the sinks
    assert agent.sinks[0].wait_idle(5.0)
    sunk = {r["part_id"]: r for r in read_jsonl(tmp_path / "verdicts.jsonl") if r.get("origin") == "api"}
    assert all(sunk[r["part_id"]]["result_id"] == r["result_id"] for r in results)
    assert agent.counters()["line"]["triggers"]["api"] == 10


def test_post_trigger_without_wait_answers_at_once_and_the_result_follows(make_agent: MakeAgent, tmp_path: Any) -> None:
    agent, conn = _api(make_agent)
    code, doc = _post(conn, "")
    assert code == 202 and doc["part_id"].startswith("part-") and isinstance(doc["trigger_id"], int)

    def sunk() -> list[dict[str, Any]]:
        agent.sinks[0].wait_idle(1.0)
        return [r for r in read_jsonl(tmp_path / "verdicts.jsonl") if r.get("trigger_id") == doc["trigger_id"]]

    assert wait_for(lambda: len(sunk()) == 1, 5.0)
    assert sunk()[0]["part_id"] == doc["part_id"]


def test_a_missed_trigger_is_answered_with_its_state(make_agent: MakeAgent) -> None:
    _agent, conn = _api(make_agent, trigger={"window_ms": 30})
    code, doc = _post(conn, json.dumps({"part_id": "OLD-1", "ts": time.time() - 10, "wait_ms": 2000}))
    assert code == 200 and doc["state"] == "missed" and doc["verdict"] is None and doc["part_id"] == "OLD-1"


def test_bad_trigger_requests_are_refused_and_the_connection_goes_on(make_agent: MakeAgent) -> None:
    agent, conn = _api(make_agent)
    assert _post(conn, "{broken")[0] == 400
    assert _post(conn, json.dumps({"part_id": "a b"}))[0] == 400
    assert _post(conn, json.dumps({"part_id": "x" * 5000}))[0] == 413
    code, doc = _post(conn, json.dumps({"part_id": "AFTER", "wait_ms": 2000}))
    assert code == 200 and doc["part_id"] == "AFTER"
    assert agent.counters()["line"]["triggers"].get("api") == 1  # the refused ones never reached the station


def test_post_trigger_on_a_free_running_source_is_a_conflict(make_agent: MakeAgent) -> None:
    _agent, conn = _api(make_agent, mode="free")
    code, doc = _post(conn, json.dumps({"part_id": "P"}))
    assert code == 409 and 'mode = "trigger"' in doc["error"]
