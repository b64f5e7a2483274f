"""Camera sources on real media: a video file, an image folder, and an HTTP MJPEG camera served on
loopback by the test (lost and brought back)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_agent.frame_queue import FrameQueue
from edge_agent.source_state import SourceState
from edge_agent.sources import Frame, SourceReader
from firmware_configs.schema import SourceSection
from tests.agent.conftest import N_VIDEO
from tests.agent.helpers import MjpegCamera, wait_for


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
