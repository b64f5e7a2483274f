"""A secret read from a file named in the device config (a broker password, a token): the file's text
without surrounding whitespace, or a clear error naming the file and the setting."""

from __future__ import annotations

from pathlib import Path

from edge_agent.errors import EdgeAgentError


def read_secret(path: str | None, setting: str, error: type[EdgeAgentError] = EdgeAgentError) -> str | None:
    """None when ``path`` is None; ``error`` (reason ``config``) when the file cannot be read."""
    if path is None:
        return None
    try:
        return Path(path).read_text("utf-8").strip()
    except OSError as exc:
        raise error(f"cannot read {setting} {path}: {exc.strerror}", reason="config") from exc
