"""The device's durable record of remote configuration, one JSON file written atomically (a power cut
leaves the old record or the new one, never half of one): the committed document, the one before it,
the one on trial, the version floor (replay) and the last refusal and rollback. Next to it, the
device's own configuration as last started (``base.json``), over which documents are laid."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_agent.remote_config.errors import ConfigRefused
from edgeline.core.fsutil import write_atomic
from edgeline.core.protocol.remote_config import ConfigOutcome, ConfigReason
from firmware_configs.schema import DeviceConfig

log = logging.getLogger(__name__)

RECORD = "config.json"
BASE = "base.json"
#: payload keys of recent refusals: a retained refusal is reported once, not at every reconnect
KEEP_REFUSED = 16


@dataclass(frozen=True)
class Applied:
    """A document the device applied: its version, the signed envelope (JSON), when, which keys it
    changed from the device's own file, whether it needed a restart and how often the agent started
    with it while it was on trial."""

    version: int
    envelope: dict[str, Any]
    at: float
    changed: tuple[str, ...] = ()
    restart: bool = False
    boots: int = 0

    @property
    def overlay(self) -> dict[str, Any]:
        config = self.envelope.get("body", {}).get("config", {})
        return config if isinstance(config, dict) else {}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Applied:
        return cls(
            int(d["version"]),
            dict(d["envelope"]),
            float(d["at"]),
            tuple(str(k) for k in d.get("changed", ())),
            bool(d.get("restart", False)),
            int(d.get("boots", 0)),
        )


@dataclass
class ConfigRecord:
    committed: Applied | None = None
    previous: Applied | None = None
    trial: Applied | None = None
    #: the newest version accepted (tried), committed or not: nothing at or below it is applied again
    floor: int = 0
    last_refusal: ConfigOutcome | None = None
    last_rollback: ConfigOutcome | None = None
    refused: list[str] = field(default_factory=list)

    # -- transitions (pure) --------------------------------------------------------------------------
    def begin(self, applied: Applied) -> None:
        """``applied`` goes on trial; nothing at or below its version is applied again."""
        self.trial = applied
        self.floor = max(self.floor, applied.version)

    def commit(self) -> None:
        if self.trial is None:
            return
        self.previous, self.committed, self.trial = self.committed, replace(self.trial, boots=0), None

    def roll_back(self, reason: str, detail: str, now: float) -> None:
        if self.trial is None:
            return
        self.last_rollback = ConfigOutcome(version=self.trial.version, reason=reason, detail=detail[:1000], ts=now)
        self.trial = None

    def refuse(self, key: str, version: int, reason: str, detail: str, now: float) -> None:
        self.last_refusal = ConfigOutcome(version=max(version, 0), reason=reason, detail=detail[:1000], ts=now)
        self.refused = [*self.refused, key][-KEEP_REFUSED:]

    def to_dict(self) -> dict[str, Any]:
        return {
            "committed": asdict(self.committed) if self.committed else None,
            "previous": asdict(self.previous) if self.previous else None,
            "trial": asdict(self.trial) if self.trial else None,
            "floor": self.floor,
            "last_refusal": self.last_refusal.model_dump() if self.last_refusal else None,
            "last_rollback": self.last_rollback.model_dump() if self.last_rollback else None,
            "refused": self.refused[-KEEP_REFUSED:],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfigRecord:
        def applied(key: str) -> Applied | None:
            v = d.get(key)
            return Applied.from_dict(v) if isinstance(v, dict) else None

        def outcome(key: str) -> ConfigOutcome | None:
            v = d.get(key)
            return ConfigOutcome.model_validate(v) if isinstance(v, dict) else None

        return cls(
            committed=applied("committed"),
            previous=applied("previous"),
            trial=applied("trial"),
            floor=int(d.get("floor", 0)),
            last_refusal=outcome("last_refusal"),
            last_rollback=outcome("last_rollback"),
            refused=[str(k) for k in d.get("refused", [])][-KEEP_REFUSED:],
        )


def state_dir_of(cfg: DeviceConfig) -> Path:
    """``[remote_config] state_dir``, or ``<updater.state_dir>/config``."""
    return Path(cfg.remote_config.state_dir or Path(cfg.updater.state_dir) / "config")


class ConfigStore:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    @property
    def record_path(self) -> Path:
        return self.dir / RECORD

    def load(self) -> ConfigRecord:
        """The record; an empty one when there is none yet. An unreadable record is an error: the
        caller falls back to the device's own file and keeps the record for inspection."""
        path = self.record_path
        if not path.exists():
            return ConfigRecord()
        try:
            return ConfigRecord.from_dict(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigRefused(ConfigReason.IO_ERROR, f"config record {path} is unreadable: {exc}") from exc

    def save(self, rec: ConfigRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.record_path, json.dumps(rec.to_dict(), sort_keys=True).encode())

    def save_base(self, base: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / BASE, json.dumps(base, sort_keys=True).encode())

    def load_base(self) -> dict[str, Any] | None:
        path = self.dir / BASE
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("device config copy %s unreadable: %s", path, exc)
            return None
        return data if isinstance(data, dict) else None
