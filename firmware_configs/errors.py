"""The one exception hierarchy of device configuration."""

from __future__ import annotations


class ConfigError(Exception):
    """A device configuration is invalid; the message names the key and the bad value."""
