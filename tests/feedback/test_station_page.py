"""The station page (``GET /station``) on a real agent: the last results with their buttons, plain
HTML with no script or external asset, every value escaped; its forms store feedback (303 back to the
page) only with the page's token and from the page's own origin; with an API token, the browser's
Basic credentials carry it."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from edge_agent.feedback.web import TOKEN_TTL_S, FeedbackWeb
from edge_agent.runtime import Agent
from tests.feedback.conftest import FeedbackAgent, post_feedback, request, triggered

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _page(agent: Agent, query: str = "", headers: dict[str, str] | None = None) -> str:
    code, head, body = request(agent, "GET", f"/station{query}", headers=headers)
    assert code == 200, body
    assert head["content-type"].startswith("text/html")
    assert "default-src 'none'" in head["content-security-policy"] and head["x-frame-options"] == "DENY"
    return body.decode()


def _token(page: str) -> str:
    found = re.search(r'name="token" value="([^"]+)"', page)
    assert found, page[:500]
    return found[1]


def _post(agent: Agent, fields: dict[str, str], **headers: str) -> tuple[int, dict[str, str]]:
    code, head, _ = request(agent, "POST", "/station/feedback", urlencode(fields).encode(), {**FORM, **headers})
    return code, head


def test_the_page_lists_the_last_results_and_its_form_stores_feedback(feedback_agent: FeedbackAgent) -> None:
    agent = feedback_agent()
    r = triggered(agent, "S-1")
    hostile = triggered(agent, "<script>alert(1)</script>")  # a part id is any printable ASCII
    page = _page(agent, "?by=Anna")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "S-1" in page and f'value="{r["result_id"]}"' in page and 'value="Anna"' in page
    assert "http://" not in page and "https://" not in page and "src=" not in page  # no external asset
    assert page.count('<form method="post" action="/station/feedback">') == 2
    assert 'value="confirm"' in page and 'value="defect"' in page
    token = _token(page)
    code, head = _post(agent, {"result_id": r["result_id"], "token": token, "by": "Anna", "truth": "defect"})
    assert code == 303
    back = urlsplit(head["location"])
    assert back.path == "/station" and parse_qs(back.query) == {"by": ["Anna"], "done": ["stored"], "part": ["S-1"]}
    after = _page(agent, "?" + back.query)
    assert "Feedback stored for part S-1." in after and "defect (Anna)" in after
    # another button on the same result replaces it
    code, head = _post(agent, {"result_id": r["result_id"], "token": token, "by": "Anna", "truth": "ok"})
    assert code == 303 and "done=replaced" in head["location"]
    rows = agent.feedback.store.feedback_rows()
    assert [(x["result_id"], x["truth"], x["by"], x["source"], x["replaced"]) for x in rows] == [
        (r["result_id"], "ok", "Anna", "station", 1)
    ]
    assert hostile["part_id"] == "<script>alert(1)</script>"


def test_forms_without_the_page_token_or_from_another_site_are_refused(feedback_agent: FeedbackAgent) -> None:
    agent = feedback_agent()
    r = triggered(agent, "X-1")
    token = _token(_page(agent))
    good = {"result_id": r["result_id"], "token": token, "truth": "defect"}
    assert _post(agent, {k: v for k, v in good.items() if k != "token"})[0] == 403
    assert _post(agent, {**good, "token": token[:-1] + ("0" if token[-1] != "0" else "1")})[0] == 403
    assert _post(agent, {**good, "token": "0." + token.split(".")[1]})[0] == 403  # another time, same mac
    assert _post(agent, good, Origin="http://evil.example")[0] == 403
    assert _post(agent, good, **{"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert (
        request(agent, "POST", "/station/feedback", b'{"truth": "ok"}', {"Content-Type": "application/json"})[0] == 400
    )
    code, head = _post(agent, {**good, "by": "<b>eve</b>"})
    assert code == 303 and "done=bad_by" in head["location"]
    page = _page(agent, "?" + urlsplit(head["location"]).query)
    assert "letters, digits, spaces" in page
    hostile = _page(agent, "?by=%22%3E%3Cscript%3Ealert(1)%3C/script%3E&done=%3Cb%3E&part=%3Ci%3E")
    assert "<script" not in hostile and "<b>" not in hostile and "letters, digits, spaces" in hostile
    assert agent.feedback.store.feedback_rows() == []
    host, port = agent.api.address
    assert _post(agent, good, Origin=f"http://{host}:{port}")[0] == 303  # the page's own origin
    assert len(agent.feedback.store.feedback_rows()) == 1


def test_with_an_api_token_the_page_asks_for_basic_credentials(feedback_agent: FeedbackAgent, tmp_path: Path) -> None:
    secret = "s3cret-token-of-the-station"
    (tmp_path / "token").write_text(secret + "\n")
    agent = feedback_agent(api={"token_file": str(tmp_path / "token")})
    r = triggered(agent, "K-1")
    code, head, _ = request(agent, "GET", "/station")
    assert code == 401 and head["www-authenticate"].startswith("Basic ")
    wrong = {"Authorization": "Basic " + base64.b64encode(b"op:not-it").decode()}
    assert request(agent, "GET", "/station", headers=wrong)[0] == 401
    basic = {"Authorization": "Basic " + base64.b64encode(f"op:{secret}".encode()).decode()}
    token = _token(_page(agent, headers=basic))
    assert _post(agent, {"result_id": r["result_id"], "token": token, "truth": "ok"})[0] == 401
    assert _post(agent, {"result_id": r["result_id"], "token": token, "truth": "ok"}, **basic)[0] == 303
    # Basic is for the station's paths only; the API proper takes the bearer token
    assert post_feedback(agent, {"result_id": r["result_id"], "truth": "defect"}, **basic)[0] == 401
    code, doc = post_feedback(agent, {"result_id": r["result_id"], "truth": "defect"}, Authorization=f"Bearer {secret}")
    assert code == 200 and doc["replaced"] == 1


def test_a_page_token_expires_and_is_bound_to_the_agent_run() -> None:
    now = [1_764_750_000.0]
    web = FeedbackWeb(host=None, secret=b"k" * 32, clock=lambda: now[0])
    token = web.page_token()
    assert web.token_ok(token)
    now[0] += TOKEN_TTL_S + 1
    assert not web.token_ok(token)
    assert not FeedbackWeb(host=None, clock=lambda: now[0]).token_ok(web.page_token())  # another run's secret
    for junk in ("", ".", "zz.zz", "1" * 5000, "é.é"):
        assert not web.token_ok(junk)
