"""Verdicts as JSON lines in a local file, rotated by size (``verdicts.jsonl.1`` ... ``.N``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from edge_agent.sinks.base import Record, SinkError, encode


class JsonlSink:
    name = "jsonl"

    def __init__(self, path: str | Path, *, max_bytes: int = 16 * 1024 * 1024, backups: int = 5, fsync: bool = False):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self._fh: BinaryIO | None = None
        self._size = 0
        self.rotations = 0

    def _open(self) -> BinaryIO:
        if self._fh is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open across writes
            except OSError as exc:
                raise SinkError(f"cannot open {self.path}: {exc.strerror}") from exc
            self._size = self._fh.tell()
        return self._fh

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            if self.path.exists():
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.rotations += 1

    def write(self, record: Record) -> None:
        self.write_batch([record])

    def write_batch(self, records: list[Record]) -> None:
        """Append records, rotating before a line that would push the file past ``max_bytes``; one
        flush (and fsync when asked) per batch."""
        fh = self._open()
        try:
            for record in records:
                line = encode(record) + b"\n"
                if self._size and self._size + len(line) > self.max_bytes:
                    fh.flush()
                    self._rotate()
                    fh = self._open()
                fh.write(line)
                self._size += len(line)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        except OSError as exc:
            # Reopen on the next write (the disk may come back, or the file was removed).
            self.close()
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            finally:
                self._fh = None
