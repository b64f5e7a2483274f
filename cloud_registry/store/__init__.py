"""Registry storage chosen by URL: ``sqlite:///path.db`` (default) or ``postgresql://...``."""

from __future__ import annotations

from pathlib import Path

from cloud_registry.errors import BackendError
from cloud_registry.store.base import (
    ROLES,
    STAGES,
    AuditRow,
    DeviceRow,
    ModelSummary,
    ModelVersion,
    RegistryStore,
    RolloutRow,
    SessionRow,
    UserRow,
)

__all__ = [
    "ROLES",
    "STAGES",
    "AuditRow",
    "DeviceRow",
    "ModelSummary",
    "ModelVersion",
    "RegistryStore",
    "RolloutRow",
    "SessionRow",
    "UserRow",
    "open_store",
]


def open_store(url: str) -> RegistryStore:
    if url.startswith("sqlite:///"):
        from cloud_registry.store.sqlite import SqliteStore

        return SqliteStore(Path(url[len("sqlite:///") :]))
    if url.startswith(("postgresql://", "postgres://")):
        from cloud_registry.store.postgres import PostgresStore

        return PostgresStore(url)
    raise BackendError(f"unsupported registry URL {url!r}: use sqlite:///path.db or postgresql://user@host/db")
