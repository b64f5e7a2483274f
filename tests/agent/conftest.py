"""Fixtures of the agent tests: bundles v1/v2/bad, a video file, an image folder, a loopback camera."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from converters.keys import KeyPaths, SigningKey
from tests.agent.helpers import MjpegCamera, write_folder, write_video
from tests.factories import tiny_frames, write_tiny_bundle

N_VIDEO = 120


@pytest.fixture(scope="session")
def trust_path(key_dir: Path) -> Path:
    return KeyPaths(key_dir).trust


@pytest.fixture(scope="session")
def bundle_v2(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny-v2", signing_key, version=2, seed=1)


@pytest.fixture(scope="session")
def bad_bundle(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> Path:
    """Properly signed, but its self-test vectors do not match what the model computes."""
    return write_tiny_bundle(
        tmp_path_factory.mktemp("bundle") / "tiny-bad", signing_key, version=3, corrupt_expected=True
    )


@pytest.fixture(scope="session")
def line_frames() -> tuple[list[np.ndarray], list[str]]:
    return tiny_frames(N_VIDEO, seed=7)


@pytest.fixture(scope="session")
def video_file(tmp_path_factory: pytest.TempPathFactory, line_frames: tuple[list[np.ndarray], list[str]]) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "line.avi", line_frames[0])


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory, line_frames: tuple[list[np.ndarray], list[str]]) -> Path:
    return write_folder(tmp_path_factory.mktemp("images") / "parts", line_frames[0][:40])


@pytest.fixture
def camera(line_frames: tuple[list[np.ndarray], list[str]]) -> Iterator[MjpegCamera]:
    cam = MjpegCamera(line_frames[0][:20], fps=60.0)
    cam.start()
    try:
        yield cam
    finally:
        cam.stop()
