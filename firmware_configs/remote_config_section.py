"""``[remote_config]`` and ``[decision]``: signed configuration pushed over MQTT (docs/remote-config.md),
and the device's own decision thresholds (which such a document may change without a restart)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from firmware_configs.base import Section


class RemoteConfigSection(Section):
    """``[remote_config]``: whether this device follows signed config documents, and how it tries them."""

    enabled: bool = False
    #: where the committed and previous documents are kept; default ``<updater.state_dir>/config``
    state_dir: str | None = None
    #: a new config must keep the agent healthy this long before it is committed ...
    trial_s: float = Field(default=5.0, gt=0.0, le=3600.0)
    #: ... and see at least this many frames in that time (0: time only)
    trial_frames: int = Field(default=5, ge=0, le=1_000_000)
    #: the longest a trial waits for its frames before it fails (a source that never delivers)
    trial_timeout_s: float = Field(default=30.0, gt=0.0, le=3600.0)
    #: directories under which a document may name files (sink logs, a source folder); the
    #: directories the device's own file already names are always allowed
    allowed_dirs: tuple[str, ...] = ()
    #: hosts a document may send verdicts to (``sinks.mqtt.host``, the ``sinks.webhook.url`` host):
    #: loopback and the hosts the device's own file already names are always allowed
    allowed_hosts: tuple[str, ...] = ()
    #: documents whose keys need a restart of the agent (a new source, inference settings) are
    #: refused when false; the agent restarts itself in a controlled way when true
    allow_restart: bool = True

    @field_validator("allowed_dirs")
    @classmethod
    def _absolute(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for d in v:
            if not d.startswith("/") or ".." in d.split("/"):
                raise ValueError(f"allowed directory {d!r} must be an absolute path without '..'")
        return v


class DecisionSection(Section):
    """``[decision]``: the device's own decision thresholds, over the model's. Unset keys keep what the
    model's manifest says. ``threshold``/``review`` apply to models with an operating point (defect
    score ``1 - p(ok)``), ``defect_min_confidence`` to models decided by their top class."""

    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    review: float | None = Field(default=None, ge=0.0, le=1.0)
    defect_min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _order(self) -> DecisionSection:
        if self.threshold is not None and self.review is not None and self.review > self.threshold:
            raise ValueError("review must not be above threshold")
        return self

    @property
    def empty(self) -> bool:
        return self.threshold is None and self.review is None and self.defect_min_confidence is None
