"""The plain TCP line protocol: one ASCII line per request, one per answer.

    TRIGGER <part_id> [<unix_ts>]  ->  RESULT <part_id> <result_id> <state> <verdict> <label> <confidence> <total_ms>
    TRIGGER                        ->  (a part id is assigned)
    FEEDBACK <result_id> <truth>   ->  FEEDBACK <result_id> <truth> stored|replaced <times replaced>
    PING                           ->  PONG
    anything else                  ->  ERROR <reason>

Answers come in the order results are ready (a feedback: once it is stored, ``ERROR <reason> <why>``
when refused; ``truth`` is ``confirm``, ``ok``, ``defect`` or a class label). A client that stops
reading is dropped once its unsent answers pass :data:`MAX_UNSENT` bytes (counted); it never holds up
the agent or other clients.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
from collections.abc import Callable
from typing import Any

from edge_agent.feedback.rules import FeedbackError, FeedbackRequest, check_id, check_truth_text
from edge_agent.line.aioloop import LoopThread
from edge_agent.line.result import Record
from firmware_configs.line_section import TcpLineSection

log = logging.getLogger(__name__)

MAX_LINE = 256
MAX_UNSENT = 64 * 1024
#: the kernel's send buffer per client
SNDBUF = 64 * 1024
#: submit(part_id, ts, origin) -> the trigger (with ``trigger_id`` and ``part_id``), or None in free-run
Submit = Callable[[str, "float | None", str], Any]
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def result_line(rec: Record) -> bytes:
    conf = rec.get("confidence")
    total = (rec.get("times") or {}).get("total_ms")
    fields = (
        rec.get("part_id") or "-",
        rec.get("result_id") or "-",
        rec.get("state") or "-",
        rec.get("verdict") or "-",
        rec.get("label") or "-",
        "-" if conf is None else f"{conf:.4f}",
        "-" if total is None else f"{total:.2f}",
    )
    return ("RESULT " + " ".join(str(f).replace(" ", "_") for f in fields) + "\n").encode("ascii", "replace")


class TcpLineServer:
    """Also the sink of the TCP line's results (``name``, ``write``, ``close``)."""

    name = "line-tcp"

    def __init__(self, section: TcpLineSection, submit: Submit, feedback: Any = None) -> None:
        self.section = section
        self._submit = submit
        #: the agent's :class:`~edge_agent.feedback.service.FeedbackService` (None: not enabled)
        self._feedback = feedback
        self._loop = LoopThread("line-tcp")
        self._server: asyncio.AbstractServer | None = None
        self._waiting: dict[int, asyncio.StreamWriter] = {}
        self._clients: set[asyncio.StreamWriter] = set()
        self.port = section.port
        self.clients_dropped = 0
        self.bad_requests = 0

    def start(self) -> None:
        self._loop.start()
        self._loop.run(self._listen())

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, self.section.host, self.section.port, limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._clients):
                w.close()

        try:
            self._loop.run(close(), timeout=2.0)
        except Exception as exc:
            log.warning("closing the TCP line failed: %s", exc)
        self._loop.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "clients": len(self._clients),
            "dropped_clients": self.clients_dropped,
            "bad_requests": self.bad_requests,
        }

    # -- the sink side (the bus's worker thread) ------------------------------------------------------
    def write(self, record: Record) -> None:
        if record.get("origin") == "tcp" and record.get("trigger_id") is not None:
            self._loop.call(self._answer, record)

    def close(self) -> None:
        pass

    def _answer(self, rec: Record) -> None:
        w = self._waiting.pop(int(rec["trigger_id"]), None)
        if w is not None and not w.is_closing():
            self._send(w, result_line(rec))

    def _send(self, w: asyncio.StreamWriter, data: bytes) -> None:
        if w.transport.get_write_buffer_size() + len(data) > MAX_UNSENT:
            self.clients_dropped += 1
            log.warning("TCP line: dropping a client that does not read its answers")
            w.transport.abort()
            return
        w.write(data)

    # -- the clients ----------------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.section.max_clients:
            writer.write(b"ERROR too many clients\n")
            writer.close()
            return
        self._clients.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # a small kernel buffer: a client that stops reading shows up soon
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        try:
            while not writer.is_closing():
                try:
                    line = await reader.readuntil(b"\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    self.bad_requests += 1
                    self._send(writer, b"ERROR line too long\n")
                    return
                text = line.decode("ascii", "replace").strip()
                if text[:9].upper() == "FEEDBACK ":
                    await self._feedback_line(text.split(), writer)
                else:
                    self._request(text, writer)
        finally:
            self._clients.discard(writer)
            for k in [k for k, w in self._waiting.items() if w is writer]:
                del self._waiting[k]
            writer.close()

    def _request(self, line: str, writer: asyncio.StreamWriter) -> None:
        parts = line.split()
        if not parts:
            return
        cmd = parts[0].upper()
        if cmd == "PING" and len(parts) == 1:
            self._send(writer, b"PONG\n")
            return
        if cmd != "TRIGGER" or len(parts) > 3:
            self.bad_requests += 1
            self._send(
                writer, b"ERROR expected TRIGGER [<part_id> [<unix_ts>]], FEEDBACK <result_id> <truth> or PING\n"
            )
            return
        ts: float | None = None
        if len(parts) == 3:
            try:
                ts = float(parts[2])
            except ValueError:
                ts = math.nan
            if not math.isfinite(ts) or ts < 0:  # nan, inf and negative times would match no frame, or any
                self.bad_requests += 1
                self._send(writer, b"ERROR the timestamp is not a Unix time in seconds\n")
                return
        t = self._submit(parts[1] if len(parts) > 1 else "", ts, "tcp")
        if t is None:
            self._send(writer, b"ERROR the source is not in trigger mode\n")
            return
        self._waiting[t.trigger_id] = writer

    async def _feedback_line(self, parts: list[str], writer: asyncio.StreamWriter) -> None:
        """``FEEDBACK <result_id> <truth>``: stored off the loop (a commit waits for the disk)."""
        service = self._feedback
        if service is None:
            self.bad_requests += 1
            self._send(writer, b"ERROR not_enabled feedback is not enabled on this device\n")
            return
        try:
            if len(parts) != 3:
                raise FeedbackError("expected FEEDBACK <result_id> <truth>")
            req = FeedbackRequest(truth=check_truth_text(parts[2]), result_id=check_id(parts[1], "result_id"))
        except FeedbackError as exc:
            got = service.refuse("tcp", exc)
        else:
            got = await asyncio.to_thread(service.submit, req, "tcp")
        if writer.is_closing():
            return
        s = got.stored
        if s is None:
            self._send(writer, f"ERROR {got.reason} {_UNPRINTABLE.sub('?', got.error)[:200]}\n".encode("ascii"))
        else:
            said = "stored" if s.previous is None else "replaced"
            self._send(writer, f"FEEDBACK {s.result_id} {s.truth} {said} {s.replaced}\n".encode("ascii", "replace"))
