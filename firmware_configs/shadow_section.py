"""``[shadow]``: a challenger model beside the serving one (the champion), on the same frames, whose
verdicts are never acted on; only aggregates of the comparison are kept (docs/agent.md, "Shadow")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from firmware_configs.base import Section


class ShadowSection(Section):
    enabled: bool = False
    #: the challenger's signed bundle (verified, loaded and self-tested like any model)
    bundle: str | None = None
    #: trust store for it; defaults to the model's
    trust_file: str | None = None
    #: the share of inspected frames offered to the challenger (sampled evenly)
    share: float = Field(default=1.0, gt=0.0, le=1.0)
    #: ``spare_cpu``: the challenger, in a process of its own at a lower priority, takes a frame only
    #: when it is idle (one frame in hand, none queued; a busy challenger skips the frame and counts
    #: it), at most ``max_fps`` a second and within ``max_duty``, so the champion's frames per second
    #: never wait for it
    policy: Literal["spare_cpu"] = "spare_cpu"
    #: the challenger's CPU at most this share of wall time (of one core); frames beyond it are
    #: skipped and counted
    max_duty: float = Field(default=0.5, gt=0.0, le=1.0)
    #: at most this many frames a second to the challenger (above a line's camera rate: every part
    #: compared; beyond it each handover would cost the champion a copy and two messages)
    max_fps: float = Field(default=60.0, gt=0.0, le=1000.0)
    #: the challenger process's nice value
    nice: int = Field(default=10, ge=0, le=19)
    #: the challenger's process in Linux's SCHED_IDLE scheduling class: it runs only on CPU time no
    #: other process wants (at nice 10 it still had about a tenth of a busy core); elsewhere ignored
    idle_class: bool = True
    #: skip a frame while other frames wait in the champion's queue (the line is behind: no CPU is
    #: spare, and on a 2-core device even an idle-class challenger on the other core slows the champion
    #: down); ``false`` compares at full speed too, within ``max_fps`` and ``max_duty``
    yield_when_behind: bool = True
    #: ONNX Runtime threads of the challenger
    threads: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _bundle(self) -> ShadowSection:
        if self.enabled and not self.bundle:
            raise ValueError("shadow.enabled needs shadow.bundle (the challenger's bundle directory)")
        return self
