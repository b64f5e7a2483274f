"""A command hook: run a program per record (the record as JSON on stdin), or keep one program
running and feed it one JSON line per record. A failing or hanging command is the sink's problem only."""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Sequence

from edge_agent.sinks.base import Record, SinkError, encode

log = logging.getLogger(__name__)


class CommandSink:
    name = "command"

    def __init__(self, argv: Sequence[str], *, mode: str = "each", timeout_s: float = 5.0) -> None:
        if not argv:
            raise SinkError("command sink needs a command")
        self.argv = list(argv)
        self.mode = mode
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def write(self, record: Record) -> None:
        if self.mode == "stream":
            self._write_stream(encode(record) + b"\n")
        else:
            self._run_each(encode(record))

    def _run_each(self, data: bytes) -> None:
        try:
            done = subprocess.run(self.argv, input=data, capture_output=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise SinkError(f"command {self.argv[0]} timed out after {self.timeout_s}s") from exc
        except OSError as exc:
            raise SinkError(f"cannot run {self.argv[0]}: {exc.strerror}") from exc
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip()[-200:]
            raise SinkError(f"command {self.argv[0]} exited {done.returncode}: {tail}")

    def _write_stream(self, line: bytes) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            if proc is not None:
                self.restarts += 1
                log.warning("command %s exited with %s; restarting it", self.argv[0], proc.returncode)
            try:
                proc = self._proc = subprocess.Popen(
                    self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            except OSError as exc:
                self._proc = None
                raise SinkError(f"cannot start {self.argv[0]}: {exc.strerror}") from exc
        assert proc.stdin is not None
        try:
            proc.stdin.write(line)
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SinkError(f"command {self.argv[0]} stopped reading: {exc}") from exc

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(self.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
