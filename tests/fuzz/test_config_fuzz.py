"""Fuzz tests of the device configuration loader: TOML text, parsed tables and files on disk. Only
``ConfigError`` may come out, and it must name something (a key, or the file)."""

from __future__ import annotations

import contextlib
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_configs.errors import ConfigError
from firmware_configs.loader import load_config, parse_config, parse_toml, shipped_profiles
from firmware_configs.schema import DeviceConfig
from tests.fuzz.conftest import fuzz_settings, json_values, mutated


def profiles() -> list[dict[str, Any]]:
    return [tomllib.loads(p.read_text("utf-8")) for p in shipped_profiles()]


def to_toml(doc: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for fuzzed tables: scalars and arrays as values, dicts as tables; JSON
    string syntax is valid TOML basic-string syntax for what ``json.dumps`` emits. ``None`` has no
    TOML form and is left out. Whatever it cannot express well simply makes invalid TOML, which the
    loader must refuse with a ConfigError too."""
    lines, tables = [], []
    for k, v in doc.items():
        key = json.dumps(str(k))
        if isinstance(v, dict):
            tables.append((f"{prefix}{key}", v))
        elif v is not None:
            lines.append(f"{key} = {json.dumps(v)}")
    out = "\n".join(lines) + "\n"
    for name, table in tables:
        out += f"\n[{name}]\n" + to_toml(table, f"{name}.")
    return out


@pytest.mark.parametrize("index", range(len(shipped_profiles())))
@fuzz_settings()
@given(data=st.data())
def test_mutated_profiles_load_or_raise_config_errors(index: int, data: st.DataObject) -> None:
    doc = data.draw(mutated(profiles()[index], max_mutations=4))
    try:
        cfg = parse_config(doc, "fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml")
        return
    assert isinstance(cfg, DeviceConfig)


@fuzz_settings()
@given(st.data())
def test_mutated_profiles_as_toml_text(data: st.DataObject) -> None:
    doc = data.draw(mutated(data.draw(st.sampled_from(profiles())), max_mutations=3))
    text = to_toml(doc) if isinstance(doc, dict) else json.dumps(doc)
    with contextlib.suppress(ConfigError):
        parse_toml(text, "fuzz.toml")


@fuzz_settings()
@given(st.text(max_size=400))
def test_arbitrary_text_is_a_config_error(text: str) -> None:
    try:
        parse_toml(text, "fuzz.toml")
    except ConfigError:
        return


@fuzz_settings()
@given(json_values)
def test_arbitrary_tables(doc: Any) -> None:
    with pytest.raises(ConfigError):
        parse_config(doc if not isinstance(doc, dict) else {**doc, "device": None}, "fuzz.toml")


@fuzz_settings()
@given(st.binary(max_size=800))
def test_config_files_with_any_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "agent.toml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)


def test_a_directory_and_a_huge_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(ConfigError, match="too large"):
        load_config(big)
