"""The one exception hierarchy of the build pipeline."""

from __future__ import annotations


class ConverterError(Exception):
    """Root of every error raised by ``converters``."""


class DatasetError(ConverterError):
    """The dataset is empty, has a single class, or holds unreadable images."""


class TrainingError(ConverterError):
    """Training failed or the estimator is unknown."""


class ConversionError(ConverterError):
    """skl2onnx conversion, ONNX loading or quantization failed."""


class GateFailed(ConverterError):
    """The quality gate refused the model; the message names the figure and the margin.
    ``attempts`` holds the figures of every quantization tried."""

    def __init__(self, message: str, *, attempts: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.attempts = list(attempts or [])


class SigningKeyError(ConverterError):
    """A signing key is missing or unreadable."""
