"""Camera sources on real media: a video file, an image folder, and an HTTP MJPEG camera served on
loopback by the test (lost and brought back, frozen with its connections open and thawed), plus the
stall watchdog on a capture that returns stale frames late, and the pixel limit on every source."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.frame_queue import FrameQueue
from edge_agent.source_state import Backoff, SourceState
from edge_agent.sources import Frame, LiveSettings, SourceReader
from firmware_configs.schema import SourceSection
from tests.agent.conftest import N_VIDEO
from tests.agent.helpers import MjpegCamera, png_bomb, wait_for


def drain(reader: SourceReader, queue: FrameQueue[Frame], timeout: float = 20.0) -> list[Frame]:
    reader.start()
    out: list[Frame] = []
    while (f := queue.get(timeout=timeout)) is not None:
        out.append(f)
    reader.join(timeout)
    return out


def test_video_file_is_read_completely_then_ends(video_file: Path) -> None:
    states: list[SourceState] = []
    q: FrameQueue[Frame] = FrameQueue(2, "block")
    section = SourceSection(kind="file", path=str(video_file))
    reader = SourceReader.from_section(section, q, on_state=lambda s, _e: states.append(s))
    frames = drain(reader, q)
    assert [f.frame_id for f in frames] == list(range(N_VIDEO))
    assert [f.ref for f in frames[:3]] == ["0", "1", "2"]
    assert frames[0].image.shape == (96, 128, 3)
    assert q.dropped == 0 and reader.frames_read == N_VIDEO
    assert states == [SourceState.CONNECTING, SourceState.STREAMING, SourceState.ENDED]


def test_looping_video_starts_again(video_file: Path) -> None:
    q: FrameQueue[Frame] = FrameQueue(4, "block")
    reader = SourceReader.from_section(SourceSection(kind="file", path=str(video_file), loop=True), q)
    reader.start()
    got = [q.get(timeout=10) for _ in range(N_VIDEO + 10)]
    reader.stop()
    assert all(f is not None for f in got)
    assert [f.ref for f in got[N_VIDEO : N_VIDEO + 3] if f] == ["0", "1", "2"]
    assert reader.state is SourceState.STOPPED


def test_missing_video_fails_with_a_clear_error(tmp_path: Path) -> None:
    q: FrameQueue[Frame] = FrameQueue(2, "block")
    reader = SourceReader.from_section(SourceSection(kind="file", path=str(tmp_path / "no.avi")), q)
    assert drain(reader, q, 5) == []
    assert reader.state is SourceState.FAILED
    assert "does not exist" in reader.machine.last_error


def test_image_folder_in_name_order_skipping_unreadable_files(image_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    names = sorted(p.name for p in image_folder.iterdir())[:5]
    for n in names:
        (folder / n).write_bytes((image_folder / n).read_bytes())
    (folder / "img_0002b.png").write_bytes(b"\x89PNG truncated")  # corrupt, between two good ones
    (folder / "notes.txt").write_text("not an image")
    q: FrameQueue[Frame] = FrameQueue(2, "block")
    reader = SourceReader.from_section(SourceSection(kind="folder", path=str(folder)), q)
    frames = drain(reader, q)
    assert [f.ref for f in frames] == names
    assert reader.capture.unreadable == 1  # type: ignore[attr-defined]
    expected = cv2.imread(str(folder / names[0]), cv2.IMREAD_COLOR)
    assert np.array_equal(frames[0].image, expected)
    assert reader.state is SourceState.ENDED


def test_mjpeg_camera_streams_over_http(camera: MjpegCamera) -> None:
    q: FrameQueue[Frame] = FrameQueue(4, "drop_oldest")
    section = SourceSection(kind="url", url=camera.url, open_timeout_ms=2000, read_timeout_ms=1000)
    reader = SourceReader.from_section(section, q)
    reader.start()
    got = [q.get(timeout=10) for _ in range(15)]
    reader.stop()
    assert all(f is not None and f.image.shape == (96, 128, 3) for f in got)
    assert reader.machine.history[:2] == [SourceState.CONNECTING, SourceState.STREAMING]


def test_camera_loss_and_return(camera: MjpegCamera) -> None:
    states: list[SourceState] = []
    q: FrameQueue[Frame] = FrameQueue(4, "drop_oldest")
    section = SourceSection(
        kind="url",
        url=camera.url,
        open_timeout_ms=1000,
        read_timeout_ms=1000,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )
    reader = SourceReader.from_section(section, q, on_state=lambda s, _e: states.append(s))
    reader.start()
    try:
        assert wait_for(lambda: reader.frames_read >= 10)
        camera.stop()  # the camera is lost
        assert wait_for(lambda: reader.state is SourceState.RECONNECTING, 10)
        assert wait_for(lambda: reader.machine.attempts >= 2, 10)  # retries keep failing while it is away
        before = reader.frames_read
        camera.start()  # ... and comes back on the same address
        assert wait_for(lambda: reader.state is SourceState.STREAMING and reader.frames_read > before + 5, 15)
    finally:
        reader.stop()
    assert reader.machine.reconnects >= 1
    first_loss = states.index(SourceState.RECONNECTING)
    assert states[:2] == [SourceState.CONNECTING, SourceState.STREAMING]
    assert SourceState.STREAMING in states[first_loss:]
    assert states[-1] is SourceState.STOPPED


def test_camera_absent_at_start_is_retried_until_it_appears(line_frames: tuple[list[np.ndarray], list[str]]) -> None:
    cam = MjpegCamera(line_frames[0][:5])
    q: FrameQueue[Frame] = FrameQueue(4, "drop_oldest")
    section = SourceSection(kind="url", url=cam.url, open_timeout_ms=500, reconnect_min_s=0.05, reconnect_max_s=0.1)
    reader = SourceReader.from_section(section, q)
    reader.start()
    try:
        assert wait_for(lambda: reader.machine.attempts >= 2, 10)
        assert reader.frames_read == 0
        cam.start()
        assert wait_for(lambda: reader.frames_read >= 5, 15)
    finally:
        reader.stop()
        cam.stop()


# -- stall watchdog, reconnect probe, pixel limit ------------------------------------------------------


def test_a_frozen_stream_is_noticed_by_the_stall_watchdog_and_frames_resume_when_it_thaws(
    camera: MjpegCamera,
) -> None:
    """The camera hangs with its connection open (nothing more is sent, new connections are accepted
    and hang too). OpenCV alone waits for its read timeout, here 10 s, and a frozen RTSP stream even
    returns ok=True after it: the watchdog must turn it into a loss within its deadline."""
    states: list[tuple[SourceState, str]] = []
    q: FrameQueue[Frame] = FrameQueue(4, "drop_oldest")
    section = SourceSection(
        kind="url",
        url=camera.url,
        open_timeout_ms=10_000,
        read_timeout_ms=10_000,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
        stall_min_s=0.3,
        stall_max_s=1.0,
    )
    reader = SourceReader.from_section(section, q, on_state=lambda s, e: states.append((s, e)))
    reader.start()
    try:
        assert wait_for(lambda: reader.frames_read >= 10)
        camera.freeze()
        assert wait_for(lambda: reader.state is not SourceState.STREAMING, 4.0), reader.state
        assert any(s is SourceState.RECONNECTING and e.startswith("stalled") for s, e in states), states
        assert reader.machine.stalls >= 1
        before = reader.frames_read
        camera.thaw()
        assert wait_for(lambda: reader.frames_read > before + 5, 5.0)
        assert reader.state is SourceState.STREAMING
    finally:
        reader.stop()


class _SlowStaleCapture:
    """Like OpenCV on a frozen RTSP server: after a few good frames each read blocks for the read
    timeout and then returns ok=True with the last frame again."""

    live = True

    def __init__(self, frame: np.ndarray, good: int, stall_s: float) -> None:
        self.frame, self.good, self.stall_s = frame, good, stall_s
        self.reads = 0
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        self.reads = 0

    def read(self) -> tuple[np.ndarray, str] | None:
        self.reads += 1
        time.sleep(self.stall_s if self.reads > self.good else 0.01)
        return self.frame, str(self.reads)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "stale-rtsp"


def test_a_read_that_returns_ok_late_with_no_new_frame_is_a_stall(
    line_frames: tuple[list[np.ndarray], list[str]],
) -> None:
    cap = _SlowStaleCapture(line_frames[0][0], good=5, stall_s=0.6)
    q: FrameQueue[Frame] = FrameQueue(64, "drop_oldest")
    errors: list[str] = []  # as the agent hears them (a reconnect clears last_error at once)
    reader = SourceReader(
        cap,
        q,
        backoff=Backoff(0.05, 0.1),
        live_settings=LiveSettings(probe_s=0.0, stall_intervals=10, stall_min_s=0.2, stall_max_s=0.4),
        on_state=lambda state, error: errors.append(error) if state is SourceState.RECONNECTING else None,
    )
    reader.start()
    try:
        assert wait_for(lambda: reader.machine.stalls >= 2, 10)
    finally:
        reader.stop()
    assert cap.opens >= 2  # reconnected
    assert len(errors) >= 2 and all("stalled" in e for e in errors[:2])


def test_a_camera_that_answers_again_is_reconnected_before_its_backoff_ends(camera: MjpegCamera) -> None:
    entered: list[float] = []  # when the reader went RECONNECTING
    q: FrameQueue[Frame] = FrameQueue(4, "drop_oldest")
    section = SourceSection(
        kind="url",
        url=camera.url,
        open_timeout_ms=1000,
        read_timeout_ms=1000,
        reconnect_min_s=4.0,  # without the probe, the first retry would come 2-4 s after the loss
        reconnect_max_s=8.0,
        reconnect_probe_s=0.1,
    )

    def on_state(state: SourceState, _error: str) -> None:
        if state is SourceState.RECONNECTING:
            entered.append(time.monotonic())

    reader = SourceReader.from_section(section, q, on_state=on_state)
    reader.start()
    try:
        assert wait_for(lambda: reader.frames_read >= 5)
        camera.stop()
        assert wait_for(lambda: reader.state is SourceState.RECONNECTING, 5)
        delay = reader.machine.delay
        assert delay >= 2.0 and len(entered) == 1
        time.sleep(0.3)  # refused meanwhile
        before = reader.frames_read
        camera.start()
        assert wait_for(lambda: reader.frames_read > before, delay + 5)
        assert time.monotonic() < entered[0] + delay  # it did not wait out the backoff
    finally:
        reader.stop()


def test_an_image_folder_source_skips_a_decompression_bomb_without_decoding_it(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    names = sorted(p.name for p in image_folder.iterdir())[:3]
    for n in names:
        (folder / n).write_bytes((image_folder / n).read_bytes())
    bomb = png_bomb(20000, 20000)
    (folder / "img_0001b.png").write_bytes(bomb)
    real = cv2.imdecode

    def guarded(buf: Any, flags: int) -> Any:
        assert len(buf) != len(bomb), "the bomb reached cv2.imdecode"
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", guarded)
    q: FrameQueue[Frame] = FrameQueue(2, "block")
    reader = SourceReader.from_section(SourceSection(kind="folder", path=str(folder)), q)
    frames = drain(reader, q)
    assert [f.ref for f in frames] == names
    capture: Any = reader.capture
    assert capture.unreadable == 1 and "20000x20000" in capture.last_error


def test_a_camera_stream_above_the_pixel_limit_is_refused_before_its_first_frame(camera: MjpegCamera) -> None:
    q: FrameQueue[Frame] = FrameQueue(4, "drop_oldest")
    section = SourceSection(
        kind="url", url=camera.url, open_timeout_ms=2000, reconnect_min_s=0.05, max_image_pixels=128 * 96 - 1
    )
    reader = SourceReader.from_section(section, q)
    reader.start()
    try:
        assert wait_for(lambda: reader.machine.attempts >= 1, 10)
        assert reader.frames_read == 0
        assert "128x96" in reader.machine.last_error and "max_image_pixels" in reader.machine.last_error
    finally:
        reader.stop()


def test_a_video_above_the_pixel_limit_fails_with_a_clear_error(video_file: Path) -> None:
    q: FrameQueue[Frame] = FrameQueue(2, "block")
    section = SourceSection(kind="file", path=str(video_file), max_image_pixels=10_000)
    reader = SourceReader.from_section(section, q)
    assert drain(reader, q, 5) == []
    assert reader.state is SourceState.FAILED and "max_image_pixels" in reader.machine.last_error
