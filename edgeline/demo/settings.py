"""The knobs of one demo run. ``--quick`` is the same story with less data and shorter phases."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class DemoSettings:
    devices: int = 3
    #: training images per class for v1 (v2 reuses them, with augmentation)
    per_class: int = 160
    #: parts per second each line's camera shows
    fps: float = 16.0
    #: a telemetry window closes after this many frames (or ``window_s``, whichever first)
    window_frames: int = 48
    window_s: float = 8.0
    #: clean inspection on v1 before the lighting drifts, seconds
    clean_s: float = 12.0
    #: the drifted line's lighting: brightness offset (grey levels), contrast gain, ramp duration
    drift_brightness: float = -70.0
    drift_contrast: float = 0.7
    drift_ramp_s: float = 3.0
    #: the drift must be confirmed by telemetry within this long after the ramp ends
    detect_timeout_s: float = 60.0
    #: telemetry windows of the settled drift that retraining reads the field's lighting from
    evidence_windows: int = 3
    #: augmented copies of each training image for v2 (the originals are kept as well)
    augment_copies: int = 2
    #: inspection on v2 after it is promoted, before v3 (which keeps v2 running while it rolls out), seconds
    after_v2_s: float = 6.0
    #: v3, the inspection model (good-part model + classifier), built in the background after v1:
    #: cross-validation folds (the library default is 5), augmented copies per image, the range of
    #: its random light (offset in grey levels, gain) and the line's targets it is gated on. 160 good
    #: images cannot show a false-reject rate under 1% (the 95% upper bound of 0/160 is 2.3%), so
    #: the demo's line names 5% false reject and 5% escape.
    v3_folds: int = 3
    v3_augment_copies: int = 1
    v3_light_brightness: tuple[float, float] = (-80.0, 30.0)
    v3_light_contrast: tuple[float, float] = (0.65, 1.2)
    v3_max_false_reject: float = 0.05
    v3_max_escape: float = 0.05
    #: v3's build runs at this lower priority (nice): the story's own work (v1, v2) comes first
    v3_nice: int = 10
    #: the longest the stage waits for v3's build to finish, seconds
    v3_build_timeout_s: float = 180.0
    #: the defect kind the training set never contains, the 1-based line that starts showing it,
    #: the share of that line's parts of that kind, and for how long, seconds
    new_kind: str = "crack"
    new_kind_line: int = 3
    new_kind_share: float = 0.6
    new_kind_s: float = 6.0
    #: the stage passes when at least this share of those parts is rejected or sent to review (of at
    #: least ``new_kind_min_frames``), and v3 rejects at most ``new_kind_max_good_reject`` of the good
    #: parts on that line
    new_kind_min_caught: float = 0.8
    new_kind_min_frames: int = 20
    new_kind_max_good_reject: float = 0.1
    #: parts of the new kind rendered to measure v2 (and v3) offline on them
    new_kind_offline: int = 200
    #: frames every device must inspect while the tampered update is refused
    tamper_watch_s: float = 4.0
    #: live frames a new model serves in its trial before it commits
    trial_frames: int = 10
    rollout_timeout_s: float = 90.0
    #: 1-based index of the line whose lighting drifts
    drift_line: int = 2
    #: v2 must beat v1 on drifted frames by at least this much (accuracy, 0-1)
    min_gain: float = 0.15
    #: and may lose at most this much on normal held-out images (accuracy points). The held-out set is
    #: 160 images (0.6 pp each) and v2's loss there measured 1.9 or 3.1 pp over eight runs (it depends
    #: on the lighting fitted from live telemetry), so the library's default of 3.0 failed about one
    #: demo run in two on one image; 4.0 keeps the gate meaningful without failing on noise.
    max_normal_drop_pp: float = 4.0
    #: the share of parts a simulated operator checks on each line (by line index, cycled): feedback
    #: through the agents' local API, scored by the cloud's field rates beside the camera's truth
    feedback_shares: tuple[float, ...] = (0.10, 0.25, 0.05)
    #: the limits the field report names ("about N parts with feedback would settle it")
    field_escape_limit: float = 0.05
    field_false_reject_limit: float = 0.05
    seed: int = 7
    quick: bool = False
    #: "auto" (Mosquitto when installed, else amqtt in-process), "mosquitto" or "amqtt"
    broker: str = "auto"

    @classmethod
    def make(cls, *, quick: bool, devices: int, seed: int = 7, broker: str = "auto") -> DemoSettings:
        base = cls(devices=devices, seed=seed, broker=broker)
        if quick:
            base = replace(
                base, fps=16.0, window_frames=40, clean_s=4.0, after_v2_s=1.5, tamper_watch_s=2.5,
                trial_frames=6, evidence_windows=2, augment_copies=1, new_kind_s=4.0, new_kind_offline=100, v3_folds=2,
                quick=True,
            )  # fmt: skip
        return replace(base, drift_line=min(base.drift_line, devices), new_kind_line=min(base.new_kind_line, devices))

    @property
    def device_ids(self) -> list[str]:
        return [f"line-{i}" for i in range(1, self.devices + 1)]

    def feedback_share(self, device_id: str) -> float:
        i = self.device_ids.index(device_id)
        return self.feedback_shares[i % len(self.feedback_shares)]

    @property
    def drifted_device(self) -> str:
        return f"line-{self.drift_line}"

    @property
    def new_kind_device(self) -> str:
        return f"line-{self.new_kind_line}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
