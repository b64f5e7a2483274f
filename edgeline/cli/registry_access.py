"""Opening the registry named by :func:`edgeline.cli.options.registry_options`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cloud_registry.registry import Registry, RegistryPaths


@contextmanager
def optional_registry(home: Path, store_url: str | None, artifacts_url: str | None) -> Iterator[Registry | None]:
    """The registry at ``--store``/``--artifacts``, or under HOME; None when neither URL is given and
    HOME holds no registry yet (commands that can work without one: ``drift``, ``ingest``)."""
    if store_url is None and not (Path(home) / "registry.db").exists():
        yield None
        return
    with open_registry(home, store_url, artifacts_url) as reg:
        yield reg


@contextmanager
def open_registry(home: Path, store_url: str | None, artifacts_url: str | None) -> Iterator[Registry]:
    """The registry; a :class:`~cloud_registry.errors.RegistryError` (bad URL, unreachable database)
    propagates to the root group, which prints it."""
    paths = RegistryPaths(home)
    reg = Registry.open(store_url or paths.store_url, artifacts_url or paths.artifacts_url)
    try:
        yield reg
    finally:
        reg.close()
