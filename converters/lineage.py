"""Where a model came from: dataset hash, training parameters, code version and git commit."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_LIBS = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "opencv-python-headless")


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(directory: Path | None = None) -> str | None:
    """The commit of the edgeline checkout (``+dirty`` when it has local changes), or None."""
    cwd = directory or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "converters", "edge_agent"],
            cwd=cwd.parent if cwd.name == "converters" else cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return f"{commit}+dirty" if status.returncode == 0 and status.stdout.strip() else commit


def code_lineage() -> dict[str, Any]:
    libs = {name: v for name in _LIBS if (v := package_version(name)) is not None}
    return {
        "code_version": package_version("edgeline") or "unknown",
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "libraries": libs,
        "built_at": round(time.time(), 3),
    }
