"""A bundle on disk: ``model.onnx`` plus ``manifest.json`` (a signed envelope whose body is the manifest).

:func:`open_bundle` checks, in order: the envelope's signature against the trust store, the manifest
schema, the artifact's size and sha256. :func:`verify_bundle` adds loading and the self-test.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import BundleError, ProtocolError
from edge_agent.model import LoadedModel
from edgeline.core.protocol.canonical import parse_json
from edgeline.core.protocol.manifest import Manifest, parse_manifest
from edgeline.core.protocol.signing import Envelope, TrustStore, parse_envelope

MANIFEST_FILE = "manifest.json"


def child_path(directory: Path, name: str) -> Path:
    """``directory / name`` for a ``name`` that comes from signed (or stored) data, refused unless it is
    one plain file name that stays inside ``directory``: no separator, not ``.``/``..``, not absolute,
    and no symlink leading out. The manifest schema already allows only plain names; this holds even
    for a manifest built without it (a stored record, a future schema)."""
    seps = {"/", "\\", "\0", os.sep} | ({os.altsep} if os.altsep else set())
    if not name or name in (".", "..") or any(s in name for s in seps) or name.startswith("."):
        raise BundleError(f"model file name {name[:80]!r} is not a plain file name")
    path = Path(directory) / name
    if path.resolve().parent != Path(directory).resolve():
        raise BundleError(f"model file {name[:80]!r} resolves outside {directory}")
    return path


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    directory: Path
    envelope: Envelope
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return child_path(self.directory, self.manifest.artifact.filename)


def read_envelope(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise BundleError(f"{directory} is not a bundle: {MANIFEST_FILE} is missing") from exc
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror}") from exc
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise ProtocolError(f"{path} does not hold a JSON object")
    return data


def check_artifact(path: Path, manifest: Manifest) -> None:
    art = manifest.artifact
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise BundleError(f"model file {path.name} is missing") from exc
    if size != art.size:
        raise BundleError(f"model file is {size} bytes, manifest says {art.size}")
    digest = sha256_file(path)
    if digest != art.sha256:
        raise BundleError(f"model sha256 {digest[:12]}... does not match manifest {art.sha256[:12]}...")


def open_bundle(directory: Path, trust: TrustStore, *, now: float | None = None, check_expiry: bool = True) -> Bundle:
    """Verify signature, schema and artifact hash of a bundle directory (no model loading).
    ``check_expiry=False`` (the committed slot at a restart) skips the expiry of the manifest AND of
    the signing key's certificate: both were checked when the deployment was accepted."""
    directory = Path(directory)
    data = read_envelope(directory)
    env = parse_envelope(data)
    body = trust.verify(env, now=now, check_expiry=check_expiry)
    manifest = parse_manifest(body)
    if check_expiry and manifest.is_expired(now):
        raise BundleError(f"manifest of {manifest.name} v{manifest.version} has expired")
    bundle = Bundle(directory, env, manifest)
    check_artifact(bundle.model_path, manifest)
    return bundle


def verify_bundle(directory: Path, trust: TrustStore, *, threads: int = 1, check_expiry: bool = True) -> dict[str, Any]:
    """Full check: signature, hashes, load and self-test. Returns a summary for display."""
    bundle = open_bundle(directory, trust, check_expiry=check_expiry)
    model = LoadedModel.load(bundle.manifest, bundle.model_path, threads=threads)
    worst = model.self_test()
    m = bundle.manifest
    return {
        "name": m.name,
        "version": m.version,
        "sha256": m.artifact.sha256,
        "size": m.artifact.size,
        "signed_by": bundle.envelope.signature.key_id,
        "quantization": m.quantization.mode,
        "selftest_cases": len(m.selftest.cases),
        "selftest_max_deviation": worst,
        "labels": list(m.labels),
    }


def write_envelope(directory: Path, envelope: Envelope) -> Path:
    path = Path(directory) / MANIFEST_FILE
    path.write_text(json.dumps(envelope.model_dump(mode="json"), indent=1, sort_keys=True), "utf-8")
    return path
