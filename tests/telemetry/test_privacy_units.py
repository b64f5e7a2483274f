"""Pseudonyms, the minimum frame count and Laplace noise."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edge_agent.telemetry.privacy import (
    FRAME_SENSITIVITY,
    LaplaceNoise,
    MinFrames,
    PrivacyError,
    load_secret,
    new_secret,
    pseudonym,
)
from edge_agent.telemetry.windows import ModelKey, RawWindow, WindowAggregator
from tests.telemetry.conftest import SECRET, SHA_A, SimClock, result


def test_pseudonym_is_keyed_stable_and_not_a_plain_hash() -> None:
    a = pseudonym("line-7-cam-2", SECRET)
    assert a == pseudonym("line-7-cam-2", SECRET)
    assert a != pseudonym("line-7-cam-3", SECRET)
    assert a != pseudonym("line-7-cam-2", SECRET[::-1])
    assert a not in (hashlib.sha256(b"line-7-cam-2").hexdigest()[:32], hashlib.md5(b"line-7-cam-2").hexdigest())
    assert len(a) == 32 and int(a, 16) >= 0
    with pytest.raises(PrivacyError):
        pseudonym("x", b"short")


def test_secret_files(tmp_path: Path) -> None:
    s = new_secret(tmp_path / "k" / "fleet.key")
    assert load_secret(tmp_path / "k" / "fleet.key") == s
    assert (tmp_path / "k" / "fleet.key").stat().st_mode & 0o077 == 0
    (tmp_path / "short").write_text("abcd")
    with pytest.raises(PrivacyError, match="shorter"):
        load_secret(tmp_path / "short")
    with pytest.raises(PrivacyError, match="cannot read"):
        load_secret(tmp_path / "missing")


def window_of(n: int, start: float = 0.0, sha: str = SHA_A) -> RawWindow:
    clock = SimClock(start)
    agg = WindowAggregator(window_s=1e9, clock=clock)
    for _ in range(n):
        agg.add(result(stats={"brightness": 0.5, "contrast": 0.1}), ModelKey("tiny", 1, sha), ("ok", "spot"))
        clock.advance(1)
    w = agg.flush()
    assert w is not None
    return w


def test_small_windows_are_merged_until_k_frames() -> None:
    mf = MinFrames(k=20)
    assert mf.offer(window_of(8, 0)) is None
    assert mf.offer(window_of(7, 100)) is None
    out = mf.offer(window_of(9, 200))
    assert out is not None
    assert (out.frames, out.merged, out.start) == (24, 3, 0.0)
    assert out.class_counts["ok"] == 24
    assert mf.pending == {}


def test_pending_windows_survive_a_restart_and_expire() -> None:
    mf = MinFrames(k=20)
    mf.offer(window_of(5, 0))
    other = MinFrames(k=20)
    other.restore(mf.to_state())
    assert other.pending[SHA_A].frames == 5
    assert other.expire(now=10.0, max_age_s=100) == []
    gone = other.expire(now=1000.0, max_age_s=100)
    assert [w.frames for w in gone] == [5]


def test_windows_of_different_models_never_merge() -> None:
    mf = MinFrames(k=10)
    assert mf.offer(window_of(6, 0, sha="a" * 64)) is None
    assert mf.offer(window_of(6, 0, sha="b" * 64)) is None
    assert len(mf.pending) == 2


def test_laplace_noise_scale_and_integrality() -> None:
    noise = LaplaceNoise(epsilon=1.0, rng=np.random.default_rng(3))
    assert noise.scale == FRAME_SENSITIVITY
    base = window_of(500)
    samples = np.array([noise.apply(base).frames for _ in range(4000)], dtype=np.float64)
    assert abs(samples.mean() - 500) < 1.5
    # Laplace(b) has standard deviation b * sqrt(2)
    assert samples.std() == pytest.approx(FRAME_SENSITIVITY * np.sqrt(2), rel=0.1)
    noised = noise.apply(base)
    assert set(noised.class_counts) == {"ok", "spot"}  # zero classes are reported (and noised) too
    assert all(isinstance(v, int) and v >= 0 for v in noised.class_counts.values())
    assert noised.confidence.dtype == np.int64 and (noised.confidence >= 0).all()
    with pytest.raises(PrivacyError):
        LaplaceNoise(epsilon=0)
    with pytest.raises(PrivacyError):
        LaplaceNoise(epsilon=1, contribution=0)
    assert LaplaceNoise(epsilon=0.5, contribution=4).scale == FRAME_SENSITIVITY * 8
