"""The local API's ``POST /trigger``, and the triggered results its callers wait for (``wait_ms``):
:class:`ResultWaiters` is an outlet of the result bus, like a line interface, behind its own bounded
queue.

A result can be published before its caller starts waiting (a fast inspection), so the last
``keep`` results are remembered by trigger id; a caller finds its result either way."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from edge_agent.line.trigger_request import TriggerRequestError, parse_trigger

Record = dict[str, Any]

#: the largest ``POST /trigger`` body
MAX_TRIGGER_BYTES = 4096


class ResultWaiters:
    name = "api-trigger"

    def __init__(self, keep: int = 256) -> None:
        self._keep = keep
        self._cond = threading.Condition()
        self._results: OrderedDict[int, Record] = OrderedDict()
        self.delivered = 0
        self.timeouts = 0

    # -- the bus side (the outlet's thread) ------------------------------------------------------------
    def write(self, record: Record) -> None:
        tid = record.get("trigger_id")
        if record.get("type") != "verdict" or not isinstance(tid, int):
            return
        with self._cond:
            self._results[tid] = record
            while len(self._results) > self._keep:
                self._results.popitem(last=False)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- the caller's side -----------------------------------------------------------------------------
    def wait(self, trigger_id: int, timeout_s: float) -> Record | None:
        """This trigger's result, or None when it did not come within ``timeout_s``."""
        with self._cond:
            found = self._cond.wait_for(lambda: trigger_id in self._results, timeout=timeout_s)
            if not found:
                self.timeouts += 1
                return None
            self.delivered += 1
            return self._results[trigger_id]

    def stats(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "timeouts": self.timeouts}


def answer_trigger(
    submit: Callable[[str, float | None, str], Any], waiters: ResultWaiters, body: bytes
) -> tuple[int, Record]:
    """The local API's answer to ``POST /trigger``: (status code, JSON document)."""
    if len(body) > MAX_TRIGGER_BYTES:
        return 413, {"error": f"a trigger is a small JSON object (at most {MAX_TRIGGER_BYTES} bytes)"}
    try:
        req = parse_trigger(body)
    except TriggerRequestError as exc:
        return 400, {"error": str(exc)}
    t = submit(req.part_id, req.ts, "api")
    if t is None:
        return 409, {"error": 'the source runs free: triggers need [source] mode = "trigger"'}
    taken = {"trigger_id": t.trigger_id, "part_id": t.part_id}
    if req.wait_ms <= 0:
        return 202, taken
    rec = waiters.wait(t.trigger_id, req.wait_ms / 1000.0)
    if rec is None:
        return 504, {"error": f"no result within {req.wait_ms:g} ms", **taken}
    return 200, rec
