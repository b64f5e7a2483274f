"""The one exception hierarchy of the build pipeline; its root derives from the project's root,
:class:`edgeline.core.errors.EdgelineError`, and every class names its machine-readable ``reason``."""

from __future__ import annotations

from edgeline.core.errors import EdgelineError


class ConverterError(EdgelineError):
    """Root of every error raised by ``converters``."""

    default_reason = "build"


class DatasetError(ConverterError):
    """The dataset is empty, has a single class, or holds unreadable images."""

    default_reason = "dataset"


class TrainingError(ConverterError):
    """Training failed or the estimator is unknown."""

    default_reason = "training"


class ConversionError(ConverterError):
    """skl2onnx conversion, ONNX loading or quantization failed."""

    default_reason = "conversion"


class GateFailed(ConverterError):
    """The quality gate refused the model; the message names the figure and the margin.
    ``attempts`` holds the figures of every quantization tried."""

    default_reason = "gate_failed"

    def __init__(
        self, message: str, *, attempts: list[dict[str, object]] | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.attempts = list(attempts or [])


class SigningKeyError(ConverterError):
    """A signing key is missing or unreadable."""

    default_reason = "signing_key"
