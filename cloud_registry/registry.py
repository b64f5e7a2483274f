"""The model registry: versions that only go up, stages (staging, production), lineage, and the
artifact bytes, over a :class:`~cloud_registry.store.RegistryStore` and an
:class:`~cloud_registry.artifacts.ArtifactStore`."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cloud_registry.artifacts import ArtifactStore, open_artifacts
from cloud_registry.errors import NotFound, RegistryError
from cloud_registry.store import STAGES, ModelVersion, RegistryStore, open_store
from cloud_registry.store.aliases import ALIAS_PATTERN, AliasMove
from edge_agent.bundle import open_bundle
from edge_agent.model import LoadedModel
from edgeline.core.errors import EdgelineError
from edgeline.core.protocol.manifest import Manifest, parse_manifest
from edgeline.core.protocol.signing import TrustStore

log = logging.getLogger(__name__)
#: a build report file larger than this is not kept (the PNG of a report is ~100 KB)
MAX_REPORT_BYTES = 8 * 1024 * 1024

_REF = re.compile(rf"^(?P<name>[A-Za-z0-9_.\-]{{1,64}})@(?P<ver>\d+|{ALIAS_PATTERN})$")


@dataclass(frozen=True)
class RegistryPaths:
    """Default locations under one home directory (``--home``, ``EDGELINE_HOME``)."""

    home: Path

    @property
    def store_url(self) -> str:
        return f"sqlite:///{(self.home / 'registry.db').resolve()}"

    @property
    def artifacts_url(self) -> str:
        return f"file://{(self.home / 'artifacts').resolve()}"


class Registry:
    def __init__(self, store: RegistryStore, artifacts: ArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts

    @classmethod
    def open(cls, store_url: str, artifacts_url: str) -> Registry:
        return cls(open_store(store_url), open_artifacts(artifacts_url))

    def close(self) -> None:
        self.store.close()

    def add_bundle(
        self, bundle_dir: Path, trust: TrustStore, *, note: str = "", parent: int | None = None, selftest: bool = True
    ) -> ModelVersion:
        """Verify a signed bundle (signature, hashes and, by default, load + self-test) and register it."""
        try:
            bundle = open_bundle(Path(bundle_dir), trust, check_expiry=False)
            if selftest:
                LoadedModel.load(bundle.manifest, bundle.model_path).self_test()
            data = bundle.model_path.read_bytes()
        except EdgelineError as exc:
            raise RegistryError(f"bundle {bundle_dir} refused: {exc}") from exc
        except OSError as exc:
            raise RegistryError(f"cannot read bundle {bundle_dir}: {exc.strerror}") from exc
        m = bundle.manifest
        if parent is None:
            lineage_parent = m.lineage.get("parent_version")
            parent = lineage_parent if isinstance(lineage_parent, int) else None
        if parent is not None and parent >= m.version:
            raise RegistryError(f"parent v{parent} must be below v{m.version}")
        uri = self.artifacts.put(data)
        mv = ModelVersion(
            name=m.name,
            version=m.version,
            sha256=m.artifact.sha256,
            size=m.artifact.size,
            envelope=bundle.envelope.model_dump(mode="json"),
            artifact_uri=uri,
            created_at=time.time(),
            parent=parent,
            lineage=dict(m.lineage),
            metrics=dict(m.metrics),
            note=note,
        )
        self.store.add_version(mv)
        self._keep_report(Path(bundle_dir) / "report", m.name, m.version)
        log.info("registered %s v%d (%s)", m.name, m.version, m.artifact.sha256[:12])
        return mv

    def _keep_report(self, report_dir: Path, name: str, version: int) -> None:
        """The build's report (``report.png``, ``report.json`` beside the bundle, as ``train`` and
        ``import`` write them), kept in the artifact store for the console. Optional: a bundle
        without one registers the same; an unreadable or oversized file is skipped with a warning."""
        for kind in ("png", "json"):
            path = report_dir / f"report.{kind}"
            try:
                if not path.is_file():
                    continue
                if path.stat().st_size > MAX_REPORT_BYTES:
                    log.warning("%s is over %d bytes: not kept", path, MAX_REPORT_BYTES)
                    continue
                data = path.read_bytes()
            except OSError as exc:
                log.warning("cannot read %s: %s", path, exc.strerror)
                continue
            self.artifacts.put(data)
            self.store.put_build_report(name, version, kind, hashlib.sha256(data).hexdigest())

    def build_report(self, name: str, version: int, kind: str) -> bytes:
        """A kept report file of ``name`` v``version`` (NotFound when the build had none)."""
        sha = self.store.build_reports(name).get(version, {}).get(kind)
        if sha is None:
            raise NotFound(f"{name} v{version} has no {kind} build report")
        return self.artifacts.get(sha)

    def resolve(self, ref: str) -> ModelVersion:
        """``name@3``, ``name@latest`` or ``name@<alias>`` (``production``, ``staging``, ``champion``, ...)."""
        match = _REF.match(ref)
        if not match:
            raise RegistryError(
                f"bad model reference {ref[:100]!r}: use NAME@VERSION, NAME@latest or NAME@ALIAS", reason="bad_ref"
            )
        name, ver = match["name"], match["ver"]
        if ver.isdigit():
            return self.store.get_version(name, int(ver))
        if ver == "latest":
            versions = self.store.list_versions(name)
            if not versions:
                raise NotFound(f"model {name} has no versions")
            return versions[-1]
        target = self.store.aliases(name).get(ver)
        if target is None:
            raise NotFound(f"model {name} has no alias {ver!r} (set one: edgeline registry alias set {name}@N {ver})")
        return self.store.get_version(name, target)

    def manifest(self, mv: ModelVersion) -> Manifest:
        try:
            return parse_manifest(mv.envelope["body"])
        except (EdgelineError, KeyError) as exc:
            raise RegistryError(f"stored manifest of {mv.name} v{mv.version} is unreadable: {exc}") from exc

    def artifact(self, mv: ModelVersion) -> bytes:
        return self.artifacts.get(mv.sha256)

    def promote(self, name: str, version: int, stage: str, actor: str = "") -> None:
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        self.store.set_stage(name, stage, version, actor)

    def set_alias(self, name: str, alias: str, version: int, actor: str = "", note: str = "") -> int | None:
        """Point ``alias`` at ``name`` v``version`` (recorded with ``actor``); the version it left, or None."""
        previous = self.store.set_alias(name, alias, version, actor, note)
        log.info("%s@%s -> v%d (was %s) by %s", name, alias, version, previous, actor or "?")
        return previous

    def delete_alias(self, name: str, alias: str, actor: str = "", note: str = "") -> int:
        return self.store.delete_alias(name, alias, actor, note)

    def alias_moves(self, name: str, alias: str | None = None) -> list[AliasMove]:
        return self.store.alias_moves(name, alias)

    def lineage(self, name: str, version: int) -> dict[str, object]:
        """Ancestors (via parent links) and direct children of a version."""
        versions = {v.version: v for v in self.store.list_versions(name)}
        if version not in versions:
            raise NotFound(f"model {name} v{version} is not registered")
        ancestors: list[int] = []
        cur = versions[version].parent
        while cur is not None and cur in versions and cur not in ancestors:
            ancestors.append(cur)
            cur = versions[cur].parent
        children = [v.version for v in versions.values() if v.parent == version]
        return {"version": version, "ancestors": ancestors, "children": children, "recorded": versions[version].lineage}
