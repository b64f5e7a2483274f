"""The one exception hierarchy of the device side. Third-party errors are mapped here at the boundary."""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Root of every error raised by ``edge_agent``."""


class ProtocolError(EdgeAgentError):
    """A message from the wire is malformed, oversized or violates the protocol."""


class SignatureError(ProtocolError):
    """A signature does not verify, or the key is unknown, expired or revoked."""


class ManifestError(ProtocolError):
    """A manifest is structurally valid JSON but not an acceptable manifest."""


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


class TransportError(EdgeAgentError):
    """The MQTT link failed (connect refused, not authorised, timed out)."""


class UpdateRejected(EdgeAgentError):
    """An update was refused; ``reason`` is a short machine-readable code sent in the event."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class OutboxError(EdgeAgentError):
    """The durable outbox cannot store or deliver a message."""
