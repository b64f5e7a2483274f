"""Would a configuration leave the device without a working station? A station needs a source that
can deliver frames and a model slot (an initial bundle, or an updater that can install one). Pure
but for the probe of the source, which is handed in."""

from __future__ import annotations

import os
from collections.abc import Callable

from firmware_configs.schema import DeviceConfig, SourceSection


def source_problem(src: SourceSection) -> str | None:
    """Why this source cannot deliver a frame on this machine (files and folders only: a camera may
    be plugged in, a network camera come up, later)."""
    path = src.path or ""
    if src.kind == "file" and not os.path.isfile(path):
        return f"source.path = {path!r}: no such video file"
    if src.kind == "folder":
        if not os.path.isdir(path):
            return f"source.path = {path!r}: no such image folder"
        try:
            with os.scandir(path) as entries:
                if not any(e.is_file() for e in entries):
                    return f"source.path = {path!r}: the image folder is empty"
        except OSError as exc:
            return f"source.path = {path!r}: cannot be read ({exc.strerror})"
    return None


def station_problem(
    cfg: DeviceConfig, source_changed: bool, probe: Callable[[SourceSection], str | None] = source_problem
) -> str | None:
    """Why ``cfg`` leaves no working station, or None. The source is probed only when the document
    changes it (a device whose own camera is unplugged is not this document's fault)."""
    if source_changed:
        problem = probe(cfg.source)
        if problem is not None:
            return f"the station would have no source: {problem}"
    if not cfg.model.bundle and not (cfg.updater.enabled and cfg.cloud.enabled):
        return "the station would have no model slot: no initial bundle and no updater to install one"
    return None
