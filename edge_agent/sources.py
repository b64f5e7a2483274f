"""The reader thread that drives :class:`~edge_agent.source_state.SourceStateMachine` over a capture
(:mod:`edge_agent.captures`) and feeds the bounded frame queue, reconnecting with backoff.

Live sources also get a stall watchdog (a stream that stays open but sends no new frame is handled
as a loss) and, while waiting to reconnect, a quick probe: a camera that refused connections and
answers again is reconnected at once instead of at the end of the backoff."""

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
    list_images,
)
from edge_agent.errors import SourceError
from edge_agent.frame_queue import FrameQueue
from edge_agent.image_decode import decode_image, read_image_file
from edge_agent.source_state import Backoff, SourceState, SourceStateMachine, StallWatchdog
from firmware_configs.schema import SourceSection

__all__ = [
    "IMAGE_EXTENSIONS",
    "Capture",
    "FolderCapture",
    "Frame",
    "LiveSettings",
    "MemoryCapture",
    "OpenCvCapture",
    "SourceReader",
    "build_capture",
    "decode_image",
    "list_images",
    "read_image_file",
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


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """The reader's live-camera settings: reconnect probe and stall watchdog (``[source]`` keys)."""

    probe_s: float = 0.25
    stall_intervals: float = 10.0
    stall_min_s: float = 2.0
    stall_max_s: float = 3.0

    @classmethod
    def from_section(cls, s: SourceSection) -> LiveSettings:
        return cls(s.reconnect_probe_s, s.stall_intervals, s.stall_min_s, s.stall_max_s)

    @classmethod
    def of(cls, capture: Capture) -> LiveSettings:
        """The settings of the section a capture was built from, else the defaults."""
        section = getattr(capture, "section", None)
        return cls.from_section(section) if isinstance(section, SourceSection) else cls()


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
        live_settings: LiveSettings | None = None,
    ) -> None:
        self.capture = capture
        self.queue = queue
        self.machine = SourceStateMachine(
            live=capture.live, loop=loop, backoff=backoff or Backoff(), max_reconnects=max_reconnects
        )
        settings = live_settings or LiveSettings.of(capture)
        self.probe_s = settings.probe_s if capture.live else 0.0
        self.watchdog = StallWatchdog(
            settings.stall_intervals if capture.live else 0.0, settings.stall_min_s, settings.stall_max_s
        )
        #: monotonic time of the last frame read (None before the first)
        self.last_frame_at: float | None = None
        self.max_fps = max_fps
        self.on_state = on_state
        self.frames_read = 0
        #: monotonic time the reader entered the camera open or read it is in now (None between calls)
        self.in_call_since: float | None = None
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
            live_settings=LiveSettings.from_section(section),
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

    def blocked_s(self, now: float | None = None) -> float | None:
        """How long the reader has been inside its current camera open or read (None: not in one)."""
        since = self.in_call_since
        return None if since is None else max(0.0, (time.monotonic() if now is None else now) - since)

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
                    self.in_call_since = time.monotonic()
                    try:
                        self.capture.open()
                    except SourceError as exc:
                        self.in_call_since = None
                        log.warning("%s: %s", self.capture.describe(), exc)
                        self._emit(m.open_failed(str(exc)))
                    else:
                        self.in_call_since = None
                        log.info("%s: streaming", self.capture.describe())
                        fps = float(getattr(self.capture, "declared_fps", 0.0) or 0.0)
                        self.watchdog.start(1.0 / fps if fps > 0 else 0.0)
                        self._emit(m.opened())
                elif m.state is SourceState.RECONNECTING:
                    log.info("%s: reconnect in %.2fs (attempt %d)", self.capture.describe(), m.delay, m.attempts)
                    if self._wait_to_reconnect(m.delay):
                        break
                    self._emit(m.retry())
                elif m.state is SourceState.STREAMING:
                    asked = self.in_call_since = time.monotonic()
                    try:
                        got = self.capture.read()
                    finally:
                        self.in_call_since = None
                    now = time.monotonic()
                    if got is None or self.watchdog.stalled(now - asked):
                        self.capture.close()
                        self._emit(self._lost(now - asked))
                        continue
                    self.watchdog.frame(now)
                    self.last_frame_at = now
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
            self.in_call_since = None
            self.capture.close()
            if self._stop.is_set() and not m.done:
                self._emit(m.stop())
            self.queue.close()

    def _lost(self, waited: float) -> SourceState:
        m = self.machine
        if not self.capture.live:
            return m.lost("end of stream")
        if self.watchdog.stalled(waited):
            msg = f"stalled: no new frame for {waited:.1f} s (watchdog {self.watchdog.timeout_s:.1f} s)"
            log.warning("%s: %s", self.capture.describe(), msg)
            return m.stalled(msg)
        return m.lost("camera lost")

    def _wait_to_reconnect(self, delay: float) -> bool:
        """Wait ``delay`` before the next attempt, or less: when a probe finds the camera answering
        after a probe found it refusing, go at once. True when stopped meanwhile."""
        probe = getattr(self.capture, "probe", None) if self.probe_s > 0 else None
        answering = True if probe is None else bool(probe())
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(self.probe_s, remaining) if probe is not None else remaining):
                return True
            if probe is None:
                continue
            was, answering = answering, bool(probe())
            if answering and not was:
                log.info("%s: the camera answers again; reconnecting now", self.capture.describe())
                return False
        return self._stop.is_set()

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
