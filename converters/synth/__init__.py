"""Seeded synthetic inspection-line images and videos (see :mod:`converters.synth.render`).

The public API other parts of edgeline use::

    from converters.synth import Lighting, Conditions, generate_dataset, write_line_video, apply_lighting
"""

from converters.synth.folders import SynthResult, generate_dataset, render_batch
from converters.synth.lighting import Augment, Lighting, apply_lighting, lighting_augment, lighting_lut
from converters.synth.render import CLASSES, FRAME_SIZE, Conditions, render_part
from converters.synth.video import FrameTruth, LineTruth, PartTruth, read_line_truth, truth_paths, write_line_video

__all__ = [
    "CLASSES",
    "FRAME_SIZE",
    "Augment",
    "Conditions",
    "FrameTruth",
    "Lighting",
    "LineTruth",
    "PartTruth",
    "SynthResult",
    "apply_lighting",
    "generate_dataset",
    "lighting_augment",
    "lighting_lut",
    "read_line_truth",
    "render_batch",
    "render_part",
    "truth_paths",
    "write_line_video",
]
