"""The one exception hierarchy of the cloud side; its root derives from the project's root,
:class:`edgeline.core.errors.EdgelineError`, and every class names its machine-readable ``reason``."""

from __future__ import annotations

from edgeline.core.errors import EdgelineError


class RegistryError(EdgelineError):
    """Root of every error raised by ``cloud_registry``."""

    default_reason = "registry"


class NotFound(RegistryError):
    """A model, version, device or rollout does not exist."""

    default_reason = "not_found"


class Conflict(RegistryError):
    """The request conflicts with the registry's state (duplicate version, bad transition)."""

    default_reason = "conflict"


class BackendError(RegistryError):
    """A storage backend (SQLite, PostgreSQL, artifact store) failed or its URL is unsupported."""

    default_reason = "backend"


class BrokerError(RegistryError):
    """The broker could not be started, configured or reached."""

    default_reason = "broker"


class RolloutError(RegistryError):
    """A rollout cannot be created or advanced."""

    default_reason = "rollout"


class IngestRejected(RegistryError):
    """A telemetry payload was refused (schema, unknown field, oversize, duplicate)."""

    default_reason = "ingest_rejected"
