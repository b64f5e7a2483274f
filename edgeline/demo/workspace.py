"""The demo's workspace: one directory holding everything a run makes, so it can be inspected after.

    keys/            root and signing keys, trust.json (what devices trust)
    pseudonym.key    the fleet's telemetry pseudonym secret
    dataset/         synthetic line images, one folder per class
    bundles/v1, v2   signed bundles as built; bundles/v3-tampered the refused manifest
    registry/        registry.db (SQLite) and the content-addressed artifacts
    telemetry/       windows.db: the ingested telemetry windows
    broker/          the Mosquitto config, persistence and log
    devices/<id>/    agent.toml, status.json, verdicts.jsonl, agent.log, state/ (slots, outbox)
    truth/<id>.csv   the camera simulator's ground truth per frame served
    summary.json     what ``--json`` prints;  report.html  the report

A directory given with ``--workdir`` must be empty or a previous demo workspace (it is then cleared).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from converters.keys import KeyPaths, SigningKey, init_keys, load_signing_key
from edge_agent.telemetry.privacy import new_secret
from edgeline.core.errors import EdgelineError
from edgeline.core.protocol.signing import TrustStore
from edgeline.demo.errors import DemoError

MARKER = ".edgeline-demo"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def create(cls, workdir: Path | None) -> Workspace:
        if workdir is None:
            return cls._mark(Path(tempfile.mkdtemp(prefix="edgeline-demo-")))
        root = Path(workdir).expanduser().resolve()
        if root.exists():
            if not root.is_dir():
                raise DemoError(f"--workdir {root} is a file, not a directory")
            entries = list(root.iterdir())
            if entries and not (root / MARKER).exists():
                raise DemoError(
                    f"--workdir {root} is not empty and not a previous demo workspace; "
                    "give an empty or new directory (nothing in it was touched)"
                )
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DemoError(f"cannot create --workdir {root}: {exc.strerror}") from exc
        return cls._mark(root)

    @classmethod
    def _mark(cls, root: Path) -> Workspace:
        (root / MARKER).write_text("a workspace of `edgeline demo`; safe to delete\n", "utf-8")
        for sub in ("logs", "bundles", "devices", "truth"):
            (root / sub).mkdir(exist_ok=True)
        return cls(root)

    # -- locations ------------------------------------------------------------------------------
    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def trust_file(self) -> Path:
        return KeyPaths(self.keys).trust

    @property
    def pseudonym_key(self) -> Path:
        return self.root / "pseudonym.key"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    def bundle(self, name: str) -> Path:
        return self.root / "bundles" / name

    def device(self, device_id: str) -> Path:
        return self.root / "devices" / device_id

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def report_path(self) -> Path:
        return self.root / "report.html"

    # -- secrets ----------------------------------------------------------------------------------
    def init_secrets(self) -> tuple[SigningKey, TrustStore]:
        """A fresh key hierarchy (root -> signing key) and the fleet's telemetry pseudonym secret."""
        try:
            paths = init_keys(self.keys)
            new_secret(self.pseudonym_key)
            return load_signing_key(self.keys), TrustStore.load(paths.trust)
        except (EdgelineError, OSError) as exc:
            raise DemoError(f"cannot create the demo keys in {self.keys}: {exc}") from exc
