"""The import rules of docs/decisions.md and DESIGN.md, checked on the source: who may import whom, and
that no MQTT topic string is written outside the protocol's topic builder."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edgeline", "edge_agent", "cloud_registry", "converters", "firmware_configs")
PROJECT = {"edgeline", "edge_agent", "cloud_registry", "converters", "firmware_configs"}
FORBIDDEN: dict[str, set[str]] = {
    # the shared core: no other edgeline package, no image or learning library
    "edgeline": (PROJECT - {"edgeline"}) | {"numpy", "cv2", "onnxruntime", "onnx", "sklearn", "skl2onnx"},
    "edge_agent": {"cloud_registry", "converters", "sklearn", "skl2onnx", "onnx", "matplotlib", "amqtt"},
    "converters": {"cloud_registry"},
    "firmware_configs": {"edge_agent", "cloud_registry", "converters", "sklearn", "onnx", "cv2", "numpy"},
    "cloud_registry": set(),
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def source_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_import_rules(package: str) -> None:
    files = source_files(package)
    assert files, f"package {package} has no source"
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package])
        for f in files
        if imported_roots(f) & FORBIDDEN[package]
    }
    assert offenders == {}, f"{package} imports what it must not: {offenders}"


TOPIC_LITERAL = re.compile(r"""["'][^"'\n]*(/devices/|/groups/|/artifacts/|/telemetry\b|/desired\b)[^"'\n]*["']""")


def test_no_topic_strings_outside_the_topic_builder() -> None:
    owner = ROOT / "edgeline" / "core" / "protocol" / "topics.py"
    hits = []
    for package in PACKAGES:
        for f in source_files(package):
            if f == owner:
                continue
            for lineno, line in enumerate(f.read_text("utf-8").splitlines(), 1):
                stripped = line.strip()
                if stripped.startswith("#") or stripped.startswith(('"""', "'''")):
                    continue
                if TOPIC_LITERAL.search(line):
                    hits.append(f"{f.relative_to(ROOT)}:{lineno}: {stripped}")
    assert hits == [], "topic strings outside edgeline/core/protocol/topics.py:\n" + "\n".join(hits)


def test_the_device_side_holds_no_private_key_operation() -> None:
    """Making, certifying and rotating keys is the cloud's (converters/keys.py); the shared signing
    module only verifies, and nothing the device imports touches a private key."""
    for package in ("edgeline", "edge_agent"):
        for f in source_files(package):
            assert "Ed25519PrivateKey" not in f.read_text("utf-8"), f"{f.relative_to(ROOT)} handles a private key"
