"""The one exception hierarchy of the cloud side."""

from __future__ import annotations


class RegistryError(Exception):
    """Root of every error raised by ``cloud_registry``."""


class NotFound(RegistryError):
    """A model, version, device or rollout does not exist."""


class Conflict(RegistryError):
    """The request conflicts with the registry's state (duplicate version, bad transition)."""


class BackendError(RegistryError):
    """A storage backend (SQLite, PostgreSQL, artifact store) failed or its URL is unsupported."""


class BrokerError(RegistryError):
    """The broker could not be started, configured or reached."""


class RolloutError(RegistryError):
    """A rollout cannot be created or advanced."""


class IngestRejected(RegistryError):
    """A telemetry payload was refused (schema, unknown field, oversize, duplicate)."""
