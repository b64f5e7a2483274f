"""Artifact storage chosen by URL. ``file://DIR`` (default) is content-addressed: an artifact lives at
``DIR/<sha[:2]>/<sha>``, written atomically, and is verified against its name when read.
An S3-compatible store is a documented follow-up (the interface is the whole contract)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from cloud_registry.errors import BackendError, NotFound
from edgeline.core.fsutil import write_atomic


class ArtifactStore(Protocol):
    url: str

    def put(self, data: bytes) -> str:
        """Store ``data``; return the URI it can be read back from."""

    def get(self, sha256: str) -> bytes:
        """The bytes with this sha256; raises NotFound, or BackendError when they are corrupt."""

    def exists(self, sha256: str) -> bool: ...


class FileArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create artifact directory {self.root}: {exc.strerror}") from exc

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BackendError(f"invalid artifact id {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self._path(sha)
        if not path.exists():
            try:
                write_atomic(path, data)
            except OSError as exc:
                raise BackendError(f"cannot write artifact {sha[:12]}: {exc.strerror}") from exc
        return f"{self.url}/{sha[:2]}/{sha}"

    def get(self, sha256: str) -> bytes:
        path = self._path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {sha256[:12]} is not in {self.url}") from exc
        except OSError as exc:
            raise BackendError(f"cannot read artifact {sha256[:12]}: {exc.strerror}") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BackendError(f"artifact {sha256[:12]} in {self.url} is corrupt (hash mismatch)")
        return data

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()


def open_artifacts(url: str) -> ArtifactStore:
    if url.startswith("file://"):
        return FileArtifactStore(Path(url[len("file://") :]))
    if url.startswith("s3://"):
        raise BackendError("S3 artifact storage is not implemented yet; use file://DIR")
    raise BackendError(f"unsupported artifact store URL {url!r}: use file://DIR")
