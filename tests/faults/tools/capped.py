"""A size-capped directory: a real, small filesystem mounted on a temp dir, so "disk full" is the
kernel's ENOSPC and not a simulation. tmpfs first (``mount -t tmpfs -o size=...``); when that is not
permitted, a loop-mounted ext4 image; when neither is (not root, no loop devices), the caller is told
why and the disk-full campaign is not run."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


class CannotCap(RuntimeError):
    """No size-capped filesystem can be mounted here."""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def capped_dir(path: Path, size_bytes: int) -> Iterator[str]:
    """Mount a filesystem of ``size_bytes`` on ``path`` (created); yields how ("tmpfs" or "loop")."""
    path.mkdir(parents=True, exist_ok=True)
    how = ""
    tmpfs = _run("mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(path))
    if tmpfs.returncode == 0:
        how = "tmpfs"
    elif shutil.which("mkfs.ext4"):
        image = path.with_name(path.name + ".img")
        with open(image, "wb") as fh:
            fh.truncate(size_bytes)
        made = _run("mkfs.ext4", "-q", "-F", str(image))
        loop = _run("mount", "-o", "loop", str(image), str(path)) if made.returncode == 0 else made
        if loop.returncode == 0:
            how = "loop"
        else:
            raise CannotCap(f"tmpfs: {tmpfs.stderr.strip()}; loop: {loop.stderr.strip()}")
    else:
        raise CannotCap(f"tmpfs: {tmpfs.stderr.strip()}; no mkfs.ext4 for a loop image")
    try:
        yield how
    finally:
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))


def fill(directory: Path, leave_bytes: int = 0, name: str = "ballast") -> Path:
    """Take all free space of ``directory``'s filesystem but ``leave_bytes`` with one file."""
    target = directory / name
    free = shutil.disk_usage(directory).free - leave_bytes
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        block = b"\0" * (64 * 1024)
        while free > 0:
            try:
                free -= os.write(fd, block[: min(len(block), free)])
            except OSError:  # ENOSPC: the filesystem keeps a little for itself
                break
        os.fsync(fd)
    finally:
        os.close(fd)
    return target
