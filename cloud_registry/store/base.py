"""The registry's storage interface and its records. Backends are chosen by URL (see ``open_store``):
``sqlite:///path.db`` (default) or ``postgresql://user@host/db[?schema=name]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cloud_registry.store.aliases import AliasMove
    from cloud_registry.store.config_pushes import ConfigPush

STAGES = ("staging", "production")
#: console roles: a viewer reads every page; an operator may also deploy, pause, resume, abort, roll back
ROLES = ("viewer", "operator")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    sha256: str
    size: int
    #: the bundle's signed envelope (body = manifest) as registered
    envelope: dict[str, Any]
    artifact_uri: str
    created_at: float
    parent: int | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: int
    latest: int
    stages: dict[str, int]


@dataclass(frozen=True)
class RolloutRow:
    id: str
    status: str
    doc: dict[str, Any]
    created_at: float
    updated_at: float
    control: str | None = None
    runner_seen: float = 0.0


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    state: dict[str, Any]
    last_seen: float
    last_event: dict[str, Any] | None = None


@dataclass(frozen=True)
class UserRow:
    """A console account; ``password_hash`` is a salted scrypt hash (never the password)."""

    username: str
    password_hash: str
    role: str
    created_at: float


@dataclass(frozen=True)
class SessionRow:
    """A console session; the cookie carries the token, the store only its SHA-256."""

    token_hash: str
    username: str
    csrf: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class AuditRow:
    ts: float
    username: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)


class RegistryStore(Protocol):
    url: str

    # models
    def add_version(self, v: ModelVersion) -> None: ...
    def get_version(self, name: str, version: int) -> ModelVersion: ...
    def list_versions(self, name: str) -> list[ModelVersion]: ...
    def list_models(self) -> list[ModelSummary]: ...
    def set_stage(self, name: str, stage: str, version: int, actor: str = "") -> None: ...
    def stages(self, name: str) -> dict[str, int]: ...

    # aliases (the stages are two of them); every move recorded
    def set_alias(self, name: str, alias: str, version: int, actor: str = "", note: str = "") -> int | None: ...
    def delete_alias(self, name: str, alias: str, actor: str = "", note: str = "") -> int: ...
    def aliases(self, name: str) -> dict[str, int]: ...
    def alias_moves(self, name: str, alias: str | None = None) -> list[AliasMove]: ...

    # deployment serial: strictly increasing, never reused
    def next_sequence(self) -> int: ...

    # remote configuration
    def record_config_push(self, push: ConfigPush) -> None: ...
    def config_pushes(self, target: str | None = None, limit: int = 50) -> list[ConfigPush]: ...

    # rollouts
    def put_rollout(self, row: RolloutRow) -> None: ...
    def get_rollout(self, rollout_id: str) -> RolloutRow: ...
    def list_rollouts(self, limit: int = 50) -> list[RolloutRow]: ...
    def save_rollout(
        self,
        rollout_id: str,
        status: str,
        doc: dict[str, Any],
        runner_seen: float | None = None,
        expect_updated_at: float | None = None,
    ) -> float | None: ...
    def request_control(self, rollout_id: str, control: str) -> None: ...
    def take_control(self, rollout_id: str) -> str | None: ...

    # fleet
    def upsert_device(self, device_id: str, state: dict[str, Any], last_seen: float) -> None: ...
    def record_event(self, device_id: str, event: dict[str, Any]) -> None: ...
    def list_devices(self) -> list[DeviceRow]: ...

    # console accounts, sessions and the audit log (cloud_registry/store/accounts.py)
    def add_user(self, user: UserRow) -> None: ...
    def get_user(self, username: str) -> UserRow: ...
    def list_users(self) -> list[UserRow]: ...
    def remove_user(self, username: str) -> None: ...
    def put_session(self, s: SessionRow) -> None: ...
    def get_session(self, token_hash: str, now: float) -> SessionRow | None: ...
    def delete_session(self, token_hash: str) -> None: ...
    def purge_sessions(self, now: float) -> None: ...
    def add_audit(self, row: AuditRow) -> None: ...
    def list_audit(self, limit: int = 200) -> list[AuditRow]: ...

    # build reports kept with their versions (files in the artifact store, by sha256)
    def put_build_report(self, name: str, version: int, kind: str, sha256: str) -> None: ...
    def build_reports(self, name: str) -> dict[int, dict[str, str]]: ...

    def close(self) -> None: ...
