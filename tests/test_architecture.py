"""The import rules of docs/decisions.md and DESIGN.md, checked on the source: who may import whom, and
that no MQTT topic string is written outside the protocol's topic builder."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: the rooms of docs/architecture.md: dotted prefix -> what it may not import (dotted prefixes)
_DEVICE_FORBIDDEN = {"cloud_registry", "converters", "edgeline.demo", "edgeline.cli", "click", "rich"} | {
    "sklearn",
    "skl2onnx",
    "onnx",
    "matplotlib",
    "amqtt",
}
FORBIDDEN: dict[str, set[str]] = {
    # the shared core: no other edgeline room, no image or learning library
    "edgeline.core": {"edgeline.demo", "edgeline.cli", "edge_agent", "cloud_registry", "converters", "firmware_configs"}
    | {"numpy", "cv2", "onnxruntime", "onnx", "sklearn", "skl2onnx"},
    "edge_agent": _DEVICE_FORBIDDEN,
    "converters": {"cloud_registry", "edgeline.demo", "edgeline.cli", "click", "rich"},
    "firmware_configs": {"edge_agent", "cloud_registry", "converters", "edgeline.demo", "edgeline.cli"}
    | {"sklearn", "onnx", "cv2", "numpy"},
    "cloud_registry": {"edgeline.demo", "edgeline.cli", "click"},
    "edgeline.demo": {"edgeline.cli", "edgeline.console"},
    # the web console: a front end over the cloud side, like the command line; only the CLI starts it
    "edgeline.console": {"edgeline.cli", "edgeline.demo"},
    # the command line sits on top of every room and is imported by none of them
    "edgeline.cli": set(),
}
# no room imports the console but the command line
for _room, _rules in FORBIDDEN.items():
    if _room not in ("edgeline.console", "edgeline.cli"):
        _rules.add("edgeline.console")
#: modules allowed what their room is not
EXEMPT: dict[str, set[str]] = {}
PACKAGES = tuple(FORBIDDEN)


def room_dir(room: str) -> Path:
    return ROOT.joinpath(*room.split("."))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def source_files(room: str) -> list[Path]:
    return sorted(room_dir(room).rglob("*.py"))


def _forbidden(path: Path, room: str) -> list[str]:
    rules = FORBIDDEN[room] - EXEMPT.get(str(path.relative_to(ROOT)), set())
    return sorted(m for m in imported_modules(path) if any(m == r or m.startswith(r + ".") for r in rules))


@pytest.mark.parametrize("room", PACKAGES)
def test_import_rules(room: str) -> None:
    files = source_files(room)
    assert files, f"room {room} has no source"
    offenders = {str(f.relative_to(ROOT)): _forbidden(f, room) for f in files if _forbidden(f, room)}
    assert offenders == {}, f"{room} imports what it must not: {offenders}"


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
