"""The one exception hierarchy of device configuration; its root derives from the project's root,
:class:`edgeline.core.errors.EdgelineError`."""

from __future__ import annotations

from edgeline.core.errors import EdgelineError


class ConfigError(EdgelineError):
    """A device configuration is invalid; the message names the key and the bad value."""

    default_reason = "config"
