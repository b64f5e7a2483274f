"""The one reference to a model version on the wire: name, version and the artifact's sha256.

Device state and events (:mod:`.delivery`) and telemetry windows (:mod:`.telemetry`) carry it as
``{"name", "version", "sha256"}``; it takes the forms a valid manifest gives them (its name
pattern, a version from 1, the artifact's sha256 in lowercase hex).
"""

from __future__ import annotations

from pydantic import Field

from edgeline.core.strict import Strict

#: Highest model version a reference may carry.
MAX_VERSION = 1_000_000_000


class ModelRef(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    version: int = Field(ge=1, le=MAX_VERSION)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


__all__ = ["MAX_VERSION", "ModelRef"]
