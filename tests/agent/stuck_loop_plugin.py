"""A test-only plugin (``--plugin tests.agent.stuck_loop_plugin``) that gets the inspection loop
stuck, as a deadlock would: once a file ``stick-loop`` appears in the station's state dir, the next
verdict's ``on_result`` never returns. The file is taken, so the station's next process runs free."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from firmware_configs.schema import DeviceConfig

MARKER = "stick-loop"


class StuckLoop:
    name = "stuck_loop"

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self._never = threading.Event()

    def start(self, agent: Any) -> None:
        pass

    def on_result(self, result: Any) -> None:
        try:
            os.replace(self.marker, self.marker.with_name(MARKER + ".taken"))
        except FileNotFoundError:
            return
        self._never.wait()  # the loop thread stays here; the status writer goes on

    def stop(self) -> None:
        pass


def build_plugin(config: DeviceConfig) -> StuckLoop:
    return StuckLoop(Path(config.updater.state_dir) / MARKER)
