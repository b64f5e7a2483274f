"""The local API's feedback routes (registered in :mod:`edge_agent.http_api`, answered here):

* ``POST /feedback`` — JSON ``{"result_id" | "part_id", "truth", "by"}``: 200 with what was stored
  (``replaced`` > 0 when it replaced an earlier feedback), 400 bad request, truth or by, 404 no such
  result or part, 413 above :data:`~edge_agent.feedback.rules.MAX_REQUEST_BYTES`, 422 a result without a
  verdict, 503 the store failed; 404 when ``[feedback]`` is not enabled.
* ``GET /station`` — the station page (:mod:`.page`); ``POST /station/feedback`` — its forms: checked
  against the page token (an HMAC of the time it was issued, under a secret of this agent run, valid
  :data:`TOKEN_TTL_S`) and the browser's ``Origin`` / ``Sec-Fetch-Site``, so a form on another site
  cannot post one (403); answered with 303 back to the page.

With ``api.token_file`` set, the station's paths also take HTTP Basic credentials whose password is
the token (a browser asks for them by itself, no script needed; any user name), and their 401 asks for
Basic; every other path still needs the bearer token."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from edge_agent.feedback import page
from edge_agent.feedback.rules import (
    FeedbackError,
    FeedbackRequest,
    check_by,
    check_id,
    check_truth_text,
    parse_request,
)
from edge_agent.feedback.service import Answer, serving_model
from edge_agent.http_wire import Request

#: path -> methods (merged into the API's routes)
ROUTES: dict[str, tuple[str, ...]] = {"/feedback": ("POST",), "/station": ("GET",), "/station/feedback": ("POST",)}
STATION_PATHS = frozenset({"/station", "/station/feedback"})
STATION_CHALLENGE = {"WWW-Authenticate": 'Basic realm="edgeline station", charset="UTF-8"'}
TOKEN_TTL_S = 12 * 3600.0
MAX_FORM_BYTES = 4096
#: refusal reason -> status code
CODES = {"unknown_result": 404, "unknown_part": 404, "no_verdict": 422, "too_large": 413, "store": 503}
#: what the page says after a form, by outcome (a fixed text: the address never carries a message)
NOTES = {
    "stored": "Feedback stored for part {part}.",
    "replaced": "Feedback for part {part} replaces the earlier one.",
    "unknown_result": "That result is no longer known on this station.",
    "no_verdict": "That result has no verdict to correct.",
    "bad_truth": "That truth cannot be given for this result.",
    "bad_by": "The operator name may hold letters, digits, spaces and . _ @ ' - only (64 at most).",
    "store": "The feedback could not be stored: see the agent's log.",
}
_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
Reply = tuple[int, bytes, str, "dict[str, str] | None"]


def basic_password(credentials: str) -> str | None:
    """The password of HTTP Basic ``credentials`` (base64 ``user:password``), or None."""
    try:
        raw = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return raw.partition(":")[2] if ":" in raw else None


class FeedbackWeb:
    def __init__(self, host: Any, secret: bytes | None = None, clock: Any = time.time) -> None:
        self.host = host
        self._secret = secret or os.urandom(32)
        self.clock = clock

    # -- page tokens -------------------------------------------------------------------------------------
    def page_token(self) -> str:
        issued = f"{int(self.clock()):x}"
        return f"{issued}.{self._mac(issued)}"

    def token_ok(self, token: str) -> bool:
        issued, _, mac = token.partition(".")
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(issued).encode("ascii")):
            return False
        try:
            return 0 <= self.clock() - int(issued, 16) <= TOKEN_TTL_S
        except ValueError:
            return False

    def _mac(self, issued: str) -> str:
        return hmac.new(self._secret, issued.encode("ascii", "replace"), hashlib.sha256).hexdigest()[:32]

    # -- the routes --------------------------------------------------------------------------------------
    def answer(self, req: Request, body: bytes) -> Reply:
        service = getattr(self.host, "feedback", None)
        if service is None:
            return _json(404, {"error": "feedback is not enabled on this device ([feedback] enabled = true)"})
        if req.path == "/feedback":
            try:
                fb = parse_request(body)
            except FeedbackError as exc:
                return _answer(service.refuse("api", exc))
            return _answer(service.submit(fb, "api"))
        if req.path == "/station":
            return self._page(service, req)
        return self._form(service, req, body)

    def _page(self, service: Any, req: Request) -> Reply:
        q = parse_qs(req.target.partition("?")[2], max_num_fields=8)
        by, note, bad = _one(q, "by"), "", False
        try:
            by = check_by(by)
        except FeedbackError:
            by, note, bad = "", NOTES["bad_by"], True
        done = _one(q, "done")
        if done in NOTES:
            try:
                part = check_id(_one(q, "part"), "part")
            except FeedbackError:
                part = "-"
            note, bad = NOTES[done].format(part=part), done not in ("stored", "replaced")
        model = serving_model(self.host)
        labels = () if model is None else tuple(x for x in model[2] if x != model[3])
        rows = service.store.recent(self.host.config.feedback.page_results)
        text = page.render(self.host.device_id, rows, self.page_token(), by=by, note=note, note_bad=bad, labels=labels)
        return 200, text.encode("utf-8"), _HTML, dict(page.HEADERS)

    def _form(self, service: Any, req: Request, body: bytes) -> Reply:
        if not _same_origin(req):
            return _json(403, {"error": "a station form is accepted from the station page only"})
        if len(body) > MAX_FORM_BYTES:
            return _json(413, {"error": f"a station form is at most {MAX_FORM_BYTES} bytes"})
        ctype = (req.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return _json(400, {"error": "a station form is application/x-www-form-urlencoded"})
        try:
            form = parse_qs(body.decode("ascii"), max_num_fields=8, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return _json(400, {"error": "the form is not url-encoded ASCII"})
        if not self.token_ok(_one(form, "token")):
            return _json(403, {"error": "the page token is missing, wrong or expired: reload the station page"})
        truth = _one(form, "truth")
        if truth == "label":
            truth = _one(form, "label")
        by = _one(form, "by")
        try:
            rid = check_id(_one(form, "result_id"), "result_id")
            fb = FeedbackRequest(truth=check_truth_text(truth), result_id=rid, by=check_by(by))
        except FeedbackError as exc:
            got = service.refuse("station", exc)
        else:
            got = service.submit(fb, "station")
        if got.stored is not None:
            done, part = ("replaced" if got.stored.previous is not None else "stored"), got.stored.part_id
        else:
            done, part = (got.reason if got.reason in NOTES else "bad_truth"), ""
        query = {"by": by if got.reason != "bad_by" else "", "done": done, "part": part}
        location = "/station?" + urlencode({k: v for k, v in query.items() if v}, quote_via=quote)
        return 303, b"", "text/plain", {"Location": location}


def _one(q: dict[str, list[str]], name: str) -> str:
    values = q.get(name)
    return values[0] if values and len(values) == 1 else ""


def _same_origin(req: Request) -> bool:
    """The browser says the form comes from this origin (or says nothing: a client without a browser)."""
    site = req.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin, host = req.get("origin"), req.get("host") or ""
    return origin is None or origin in (f"http://{host}", f"https://{host}")  # https: behind a TLS proxy


def _json(code: int, doc: dict[str, Any]) -> Reply:
    return code, json.dumps(doc, sort_keys=True).encode("utf-8"), _JSON, None


def _answer(got: Answer) -> Reply:
    if got.ok:
        return _json(200, got.doc())
    return _json(CODES.get(got.reason, 400), got.doc())
