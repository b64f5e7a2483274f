"""A simulated operator on the main story's free-running lines: it checks a seeded share of each
line's parts and tells the line's agent what they really were, through the agent's local API
(``POST /feedback`` by result id), while the story runs.

With ``[feedback]`` on, every free-run verdict carries a ``result_id`` (``<device>-<boot>-f<frame_id>``)
in the line's JSONL sink. The operator tails that log, pairs each verdict with the camera's truth log
(:func:`edgeline.demo.scoring.match`: the frame's ``ref`` in its camera connection, as the scoring does),
and for a random share of the paired verdicts (its own seeded stream per line) posts the truth
(``ok`` or ``defect``). From there the feedback takes the production path: the agent's feedback store,
the counts of the next telemetry window, the cloud's ingest and field rates. The operator keeps its
own tally of what it said (per line and model version), so the demo can check that the counts the
cloud received are the ones given.

Verdicts whose frame is not in the truth log yet (the camera flushes it twice a second) wait for the
next round; after :data:`GIVE_UP_S` they are left unchecked and counted.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeline.demo.scoring import load_truth, match

log = logging.getLogger(__name__)

#: seconds between two rounds of the operator
ROUND_S = 0.5
#: a verdict not paired with the camera's truth within this long is left unchecked
GIVE_UP_S = 8.0
#: the share of parts the operator checks on each line, by line index (cycled): a few per cent to a quarter
DEFAULT_SHARES: tuple[float, ...] = (0.10, 0.25, 0.05)


@dataclass(frozen=True)
class OperatorLine:
    """One line the operator stands at: its agent's sink log, local API port and share of parts."""

    device: str
    verdicts: Path
    truth: Path
    api_port: int
    share: float


@dataclass
class LineTally:
    """What the operator did on one line."""

    share: float
    seen: int = 0
    checked: int = 0
    stored: int = 0
    unpaired: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    #: per model version: (camera truth ok/defect, the verdict) -> parts with feedback stored
    said: dict[int, Counter[tuple[str, str]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "verdicts_seen": self.seen,
            "checked": self.checked,
            "stored": self.stored,
            "unpaired": self.unpaired,
            "refused": dict(self.refused),
            "by_version": {
                str(v): {f"{t}/{vd}": n for (t, vd), n in sorted(c.items())} for v, c in sorted(self.said.items())
            },
        }


class _Tail:
    """New complete lines of a growing JSONL file (starts again from the top if the file shrank)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, 2)
                if fh.tell() < self.offset:
                    self.offset = 0
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next round
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out


def post_feedback(port: int, result_id: str, truth: str, timeout: float = 5.0) -> tuple[bool, str]:
    """(stored, reason) of one ``POST /feedback`` to the agent's local API on 127.0.0.1."""
    body = json.dumps({"result_id": result_id, "truth": truth, "by": "demo operator"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/feedback", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        doc = json.loads(resp.read() or b"{}")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return False, f"api: {type(exc).__name__}"
    finally:
        conn.close()
    if resp.status == 200 and isinstance(doc, dict) and doc.get("ok"):
        return True, ""
    return False, str(doc.get("reason", resp.status)) if isinstance(doc, dict) else str(resp.status)


class _LineWork:
    def __init__(self, line: OperatorLine, seed: int) -> None:
        self.line = line
        self.tail = _Tail(line.verdicts)
        self.rng = random.Random(f"{seed}:{line.device}")
        self.pending: list[tuple[float, dict[str, Any]]] = []
        self.tally = LineTally(line.share)

    def round(self, now: float) -> None:
        for rec in self.tail.read():
            if rec.get("type") == "verdict" and rec.get("result_id") and rec.get("verdict") is not None:
                self.pending.append((now, rec))
                self.tally.seen += 1
        if not self.pending:
            return
        since = {id(rec): t for t, rec in self.pending}
        paired, unpaired = match([rec for _, rec in self.pending], load_truth(self.line.truth))
        self.pending = []
        for rec in unpaired:
            if now - since[id(rec)] > GIVE_UP_S:
                self.tally.unpaired += 1
            else:
                self.pending.append((since[id(rec)], rec))
        paired.sort(key=lambda p: int(p[0]["frame_id"]))  # one draw per verdict, in the line's order
        for rec, row in paired:
            if self.rng.random() >= self.line.share:
                continue
            truth = "ok" if row.label == "ok" else "defect"
            self.tally.checked += 1
            stored, reason = post_feedback(self.line.api_port, str(rec["result_id"]), truth)
            if stored:
                self.tally.stored += 1
                said = self.tally.said.setdefault(int(rec["model_version"]), Counter())
                said[(truth, str(rec["verdict"]))] += 1
            else:
                self.tally.refused[reason] += 1


class StoryOperator:
    """The operator of every line, on a thread of its own; :meth:`stop` ends it after one last round."""

    def __init__(self, lines: list[OperatorLine], seed: int) -> None:
        for line in lines:
            if not 0.0 < line.share <= 1.0:
                raise ValueError(f"{line.device}: the operator's share of parts must be in (0, 1], got {line.share}")
        self._work = [_LineWork(line, seed) for line in lines]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-operator", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(ROUND_S)
            now = time.monotonic()
            for w in self._work:
                try:
                    w.round(now)
                except Exception:  # the story must go on: a failed round is retried with the next
                    self.errors += 1
                    log.exception("operator round on %s failed", w.line.device)
            if stopping:
                return

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def tallies(self) -> Mapping[str, LineTally]:
        return {w.line.device: w.tally for w in self._work}
