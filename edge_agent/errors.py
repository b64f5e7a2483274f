"""The device side's exceptions. Third-party errors are mapped here at the boundary.

:class:`EdgeAgentError` is the root of the device's own errors; it derives from the project's root
:class:`~edgeline.core.errors.EdgelineError`, like the shared core's errors the device raises too
(re-exported here: a protocol, signature, manifest or transport error is as much the device's)."""

from __future__ import annotations

from edgeline.core.errors import EdgelineError, ManifestError, ProtocolError, SignatureError, TransportError

__all__ = [
    "BundleError",
    "EdgeAgentError",
    "EdgelineError",
    "ManifestError",
    "ModelLoadError",
    "OutboxError",
    "PreprocessError",
    "ProtocolError",
    "SelfTestError",
    "SignatureError",
    "SourceError",
    "TransportError",
    "UpdateRejected",
]


class EdgeAgentError(EdgelineError):
    """Root of the errors of ``edge_agent`` itself."""

    default_reason = "device"


class BundleError(EdgeAgentError):
    """A bundle on disk is missing, corrupt, or does not match its manifest."""


class ModelLoadError(BundleError):
    """ONNX Runtime could not load the model, or its inputs/outputs do not match the manifest."""


class SelfTestError(BundleError):
    """The model does not reproduce the self-test vectors carried by its manifest."""


class PreprocessError(EdgeAgentError):
    """A frame cannot be preprocessed with the given spec (wrong shape, empty ROI, ...)."""


class SourceError(EdgeAgentError):
    """A camera source cannot be opened or read."""


class UpdateRejected(EdgeAgentError):
    """An update was refused; ``reason`` is a short machine-readable code sent in the event."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason, reason=reason)
        self.detail = detail


class OutboxError(EdgeAgentError):
    """The durable outbox cannot store or deliver a message."""
