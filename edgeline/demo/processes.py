"""Child processes of the demo (camera simulator, agents): started in their own session so a Ctrl-C in
the terminal reaches only the demo, which then stops them in order; on Linux they also receive
SIGTERM if the demo itself dies (``PR_SET_PDEATHSIG``), so nothing is left running."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeline.demo.errors import DemoError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        try:
            return subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        except OSError as exc:
            raise DemoError(f"cannot start {argv[0]}: {exc.strerror}") from exc


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0, *, signal_it: bool = True) -> int | None:
    """SIGTERM (unless already sent: ``signal_it=False``), wait up to ``timeout``, then SIGKILL.
    Returns the exit code (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None and signal_it:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    if proc.poll() is None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("process %d did not stop within %.0fs; killing it", proc.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return proc.returncode


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text("utf-8", "replace")[-chars:]
    except OSError:
        return ""


class CameraProcess:
    """The camera simulator process (see :mod:`edgeline.demo.camera`) and its control API."""

    def __init__(self, workdir: Path, lines: Sequence[str], *, fps: float, seed: int) -> None:
        self.workdir = workdir
        self.lines = list(lines)
        self.fps = fps
        self.seed = seed
        self.truth_dir = workdir / "truth"
        self.ready_file = workdir / "camera.json"
        self.log_path = workdir / "logs" / "camera.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "edgeline.demo.camera",
            "--lines",
            ",".join(self.lines),
            "--truth-dir",
            str(self.truth_dir),
            "--ready-file",
            str(self.ready_file),
            "--fps",
            str(self.fps),
            "--seed",
            str(self.seed),
        ]
        self.proc = spawn(argv, self.log_path)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise DemoError(f"the camera simulator exited ({self.proc.returncode}): {tail(self.log_path)}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.port = int(json.loads(self.ready_file.read_text())["port"])
                return
            time.sleep(0.05)
        raise DemoError(f"the camera simulator did not start within {timeout:.0f}s: {tail(self.log_path)}")

    def url(self, line: str) -> str:
        return f"http://127.0.0.1:{self.port}/{line}.mjpg"

    def _request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method="POST" if data else "GET")
        if data:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise DemoError(f"camera simulator refused {path}: {exc.read()[:200]!r}") from exc
        except (OSError, ValueError) as exc:
            raise DemoError(f"camera simulator unreachable ({path}): {exc}") from exc
        if not isinstance(doc, dict):
            raise DemoError(f"camera simulator answered {path} with {doc!r}")
        return doc

    def set_lighting(self, line: str, brightness: float, contrast: float, ramp_s: float) -> dict[str, Any]:
        return self._request(f"/{line}/lighting", {"brightness": brightness, "contrast": contrast, "ramp_s": ramp_s})

    def set_parts(self, line: str, kind: str | None, share: float = 0.5) -> dict[str, Any]:
        """Make ``share`` of ``line``'s parts of ``kind`` from now on (None: back to the usual mix)."""
        return self._request(f"/{line}/parts", {"kind": kind, "share": share})

    def status(self) -> dict[str, Any]:
        return self._request("/status")

    def stop(self) -> None:
        stop_process(self.proc, timeout=5.0)


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def leftover_processes(root: Path) -> list[dict[str, Any]]:
    """Processes still running whose command line mentions ``root`` (the workspace), other than this
    process and the ones that started it. After a demo there must be none."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return []
    skip = _ancestors()
    needle = str(root).encode()
    out = []
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmd and state != "Z":
            out.append({"pid": int(entry.name), "cmdline": cmd.replace(b"\0", b" ").decode("utf-8", "replace")[:200]})
    return out
