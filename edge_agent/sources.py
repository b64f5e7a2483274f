"""The reader thread that drives :class:`~edge_agent.source_state.SourceStateMachine` over a capture
(:mod:`edge_agent.captures`) and feeds the bounded frame queue, reconnecting with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_agent.captures import (
    IMAGE_EXTENSIONS,
    Capture,
    FolderCapture,
    MemoryCapture,
    OpenCvCapture,
    build_capture,
    decode_image,
    list_images,
    read_image,
)
from edge_agent.errors import SourceError
from edge_agent.frame_queue import FrameQueue
from edge_agent.source_state import Backoff, SourceState, SourceStateMachine
from firmware_configs.schema import SourceSection

__all__ = [
    "IMAGE_EXTENSIONS",
    "Capture",
    "FolderCapture",
    "Frame",
    "MemoryCapture",
    "OpenCvCapture",
    "SourceReader",
    "build_capture",
    "decode_image",
    "list_images",
    "read_image",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    frame_id: int
    image: np.ndarray
    ts: float
    #: where it came from: a file name, or the frame's index in a video
    ref: str


StateListener = Callable[[SourceState, str], None]


class SourceReader:
    """Reads a :class:`Capture` on its own thread into a :class:`FrameQueue`, reconnecting with backoff."""

    def __init__(
        self,
        capture: Capture,
        queue: FrameQueue[Frame],
        *,
        loop: bool = False,
        max_fps: float = 0.0,
        backoff: Backoff | None = None,
        max_reconnects: int = 0,
        on_state: StateListener | None = None,
        name: str = "source",
    ) -> None:
        self.capture = capture
        self.queue = queue
        self.machine = SourceStateMachine(
            live=capture.live, loop=loop, backoff=backoff or Backoff(), max_reconnects=max_reconnects
        )
        self.max_fps = max_fps
        self.on_state = on_state
        self.frames_read = 0
        self._next_id = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @classmethod
    def from_section(
        cls, section: SourceSection, queue: FrameQueue[Frame], on_state: StateListener | None = None, name: str = ""
    ) -> SourceReader:
        return cls(
            build_capture(section),
            queue,
            loop=section.loop,
            max_fps=section.max_fps,
            backoff=Backoff(section.reconnect_min_s, section.reconnect_max_s),
            max_reconnects=section.max_reconnects,
            on_state=on_state,
            name=name or "source",
        )

    @property
    def state(self) -> SourceState:
        return self.machine.state

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.queue.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _emit(self, state: SourceState) -> None:
        if self.on_state is not None:
            try:
                self.on_state(state, self.machine.last_error)
            except Exception:
                log.exception("source state listener failed")

    def _run(self) -> None:
        m = self.machine
        self._emit(m.start())
        next_due = time.monotonic()
        try:
            while not self._stop.is_set() and not m.done:
                if m.state is SourceState.CONNECTING:
                    try:
                        self.capture.open()
                    except SourceError as exc:
                        log.warning("%s: %s", self.capture.describe(), exc)
                        self._emit(m.open_failed(str(exc)))
                    else:
                        log.info("%s: streaming", self.capture.describe())
                        self._emit(m.opened())
                elif m.state is SourceState.RECONNECTING:
                    log.info("%s: reconnect in %.2fs (attempt %d)", self.capture.describe(), m.delay, m.attempts)
                    if self._stop.wait(m.delay):
                        break
                    self._emit(m.retry())
                elif m.state is SourceState.STREAMING:
                    got = self.capture.read()
                    if got is None:
                        self.capture.close()
                        self._emit(m.lost("camera lost" if self.capture.live else "end of stream"))
                        continue
                    if self.max_fps > 0:
                        next_due = max(next_due + 1.0 / self.max_fps, time.monotonic())
                        if self._stop.wait(max(0.0, next_due - time.monotonic())):
                            break
                    self._deliver(got)
        except Exception as exc:  # a bug or an OpenCV surprise must not kill the agent silently
            log.exception("source %s crashed", self.capture.describe())
            if not m.done:
                self._emit(m.fail(f"reader crashed: {exc}"))
        finally:
            self.capture.close()
            if self._stop.is_set() and not m.done:
                self._emit(m.stop())
            self.queue.close()

    def _deliver(self, got: tuple[np.ndarray, str]) -> None:
        img, ref = got
        frame = Frame(self._next_id, img, time.time(), ref)
        self._next_id += 1
        # The block policy waits for room; poll so that stop() is honoured while waiting. A frame
        # read while stopping is not counted as read: every counted frame is inspected or dropped.
        while not self.queue.put(frame, timeout=0.2):
            if self.queue.closed or self._stop.is_set():
                return
        self.frames_read += 1
