"""Privacy of telemetry on the device: keyed pseudonyms, a minimum frame count per window, and
optional Laplace noise on every count. The reasoning and the guarantees are in docs/privacy.md.

* :func:`pseudonym`: HMAC-SHA256 of the device id under a per-fleet secret, 128 bits in hex. Stable
  for a device (so the cloud can follow one device's drift over time), unlinkable to the device id
  without the secret (a plain hash of a guessable id is not a pseudonym).
* :class:`MinFrames`: a window with fewer than ``k`` frames is not sent; it is merged into the next
  window of the same model. Pending windows survive restarts (the plugin persists them).
* :class:`LaplaceNoise`: adds Laplace(Δ/ε) noise to every count of a window, where Δ is the L1
  sensitivity of one frame (it adds 1 to the frame count, to one class, one confidence bin, one bin
  of each input statistic, the sampled-frames count, one anomaly-score bin and one defect-score bin,
  and its part's feedback changes at most two feedback cells: Δ = 12, :data:`FRAME_SENSITIVITY`)
  times ``contribution``, the most frames one protected unit (a part, a batch) may put in one
  window. A window that carries a ``shadow`` block (a challenger compared the frames) has Δ =
  12 + :data:`~edge_agent.shadow.window.SHADOW_SENSITIVITY` (the counts a compared frame adds there):
  the sensitivity of a window is the sum over the blocks it carries (:meth:`LaplaceNoise.sensitivity`,
  :meth:`LaplaceNoise.scale_for`). Counts are rounded and clipped at 0 afterwards (post-processing keeps the guarantee);
  drift is scored on the noised counts. The field metrics' counts are rounded but not clipped
  (:meth:`LaplaceNoise.signed`): the cloud sums them over windows, and a sum of clipped cells that
  are mostly 0 would be biased upwards by about half the scale per cell and window. The shadow
  block's counts are signed too (the cloud sums its agreement matrices), and both blocks carry the
  scale the window was noised with (``noise_scale``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import EdgeAgentError
from edge_agent.preprocessing import STAT_RANGES
from edge_agent.shadow.window import SHADOW_SENSITIVITY
from edge_agent.telemetry.windows import RawWindow

log = logging.getLogger(__name__)

MIN_SECRET_BYTES = 16
#: Count cells one frame touches: frames, class, confidence bin, one bin per input statistic, stats_frames,
#: one anomaly-score bin; and one defect-score bin of the field metrics plus the two feedback cells its
#: part can change in a window (the feedback given, the earlier one it replaced). The counts of a
#: window's ``shadow`` block are not included: :meth:`LaplaceNoise.sensitivity` adds them.
FRAME_SENSITIVITY = 3 + len(STAT_RANGES) + 1 + 1 + 1 + 2


class PrivacyError(EdgeAgentError):
    """The pseudonym secret is missing or too short, or a privacy parameter is invalid."""


def pseudonym(device_id: str, secret: bytes) -> str:
    """Keyed pseudonym of a device: 32 hex digits of HMAC-SHA256(secret, device id)."""
    if len(secret) < MIN_SECRET_BYTES:
        raise PrivacyError(f"the pseudonym secret must be at least {MIN_SECRET_BYTES} bytes")
    return hmac.new(secret, device_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def load_secret(path: Path) -> bytes:
    """Read the fleet's pseudonym secret (raw bytes or hex text, at least 16 bytes)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PrivacyError(f"cannot read the pseudonym secret {path}: {exc.strerror}") from exc
    text = raw.strip()
    try:
        secret = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        secret = text
    if len(secret) < MIN_SECRET_BYTES:
        raise PrivacyError(f"the pseudonym secret in {path} is shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def new_secret(path: Path) -> bytes:
    """Create a random 32-byte secret as hex text, readable only by its owner."""
    secret = os.urandom(32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex() + "\n")
    return secret


@dataclass
class MinFrames:
    """Hold windows with fewer than ``k`` frames and merge them into the next window of the same model."""

    k: int
    pending: dict[str, RawWindow] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise PrivacyError("the minimum frame count k must be >= 1")

    def offer(self, raw: RawWindow) -> RawWindow | None:
        """Return the window to send (merged with what was pending), or None if it is still below k."""
        held = self.pending.pop(raw.model.sha256, None)
        merged = held.merge(raw) if held is not None else raw
        if merged.frames >= self.k:
            return merged
        self.pending[raw.model.sha256] = merged
        return None

    def expire(self, now: float, max_age_s: float) -> list[RawWindow]:
        """Forget pending windows older than ``max_age_s`` (their model is not served any more). They
        are suppressed, never sent; the caller counts them."""
        old = [sha for sha, w in self.pending.items() if now - w.end > max_age_s]
        return [self.pending.pop(sha) for sha in old]

    def to_state(self) -> list[dict[str, Any]]:
        return [w.to_state() for w in self.pending.values()]

    def restore(self, state: list[Mapping[str, Any]]) -> None:
        for item in state:
            w = RawWindow.from_state(item)
            held = self.pending.get(w.model.sha256)
            self.pending[w.model.sha256] = held.merge(w) if held is not None else w


@dataclass
class LaplaceNoise:
    """Laplace noise of scale ``sensitivity * contribution / epsilon`` on every count of a window,
    ``sensitivity`` the L1 sensitivity of one frame in that window (:meth:`sensitivity`)."""

    epsilon: float
    contribution: int = 1
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __post_init__(self) -> None:
        if not 0 < self.epsilon <= 100:
            raise PrivacyError("epsilon must be in (0, 100]")
        if self.contribution < 1:
            raise PrivacyError("contribution must be >= 1 frame")

    @property
    def scale(self) -> float:
        """The scale of a window without a ``shadow`` block."""
        return FRAME_SENSITIVITY * self.contribution / self.epsilon

    @staticmethod
    def sensitivity(raw: RawWindow) -> int:
        """L1 sensitivity of one frame in ``raw``: the sum over the blocks the window carries."""
        return FRAME_SENSITIVITY + (SHADOW_SENSITIVITY if raw.shadow is not None else 0)

    def scale_for(self, raw: RawWindow) -> float:
        """The Laplace scale :meth:`apply` gives ``raw``'s counts (and the drift thresholds need)."""
        return self.sensitivity(raw) * self.contribution / self.epsilon

    def _draw(self, values: np.ndarray, scale: float | None) -> np.ndarray:
        b = self.scale if scale is None else scale
        return values.astype(np.float64) + self.rng.laplace(0.0, b, size=values.shape)

    def _noisy(self, values: np.ndarray, scale: float | None = None) -> np.ndarray:
        """Noised, rounded and clipped at 0 (``scale``: :attr:`scale` when None)."""
        return np.maximum(np.rint(self._draw(values, scale)), 0).astype(np.int64)

    def signed(self, values: np.ndarray, scale: float | None = None) -> np.ndarray:
        """Noised and rounded, negative values kept (for counts the cloud sums over windows)."""
        return np.rint(self._draw(values, scale)).astype(np.int64)

    def apply(self, raw: RawWindow) -> RawWindow:
        b = self.scale_for(raw)

        def clipped(values: np.ndarray) -> np.ndarray:
            return self._noisy(values, b)

        def signed(values: np.ndarray) -> np.ndarray:
            return self.signed(values, b)

        def one(value: int) -> int:
            return int(clipped(np.array([value]))[0])

        labels = list(raw.class_counts)
        counts = clipped(np.array([raw.class_counts[k] for k in labels], np.int64))
        return replace(
            raw,
            frames=one(raw.frames),
            class_counts=dict(zip(labels, (int(c) for c in counts), strict=True)),
            confidence=clipped(raw.confidence),
            anomaly=clipped(raw.anomaly) if raw.anomaly.sum() else raw.anomaly,
            stats={n: clipped(h) for n, h in raw.stats.items()},
            stats_frames=one(raw.stats_frames),
            errors=one(raw.errors),
            drops=one(raw.drops),
            field_metrics=raw.field_metrics.noised(signed, b, (raw.model.name, raw.model.version)),
            shadow=raw.shadow.noised(signed, b, tuple(labels)) if raw.shadow is not None else None,
        )
