"""The refusal of a remote config document: a machine-readable reason and a detail for people."""

from __future__ import annotations

from edge_agent.errors import EdgeAgentError


class ConfigRefused(EdgeAgentError):
    """A config document was refused (or rolled back); ``reason`` is a
    :class:`~edgeline.core.protocol.remote_config.ConfigReason` value."""

    def __init__(self, reason: str, detail: str = "", version: int = 0) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason, reason=reason)
        self.detail = detail
        self.version = version
