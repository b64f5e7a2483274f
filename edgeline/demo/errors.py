"""Errors of ``edgeline demo`` (under the cloud side's root, :class:`RegistryError`)."""

from __future__ import annotations

from cloud_registry.errors import RegistryError


class DemoError(RegistryError):
    """The demo could not set up or run a stage: the message says which part failed and why."""

    default_reason = "demo"
