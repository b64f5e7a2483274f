"""Seeded synthetic inspection-line images and videos (see :mod:`converters.synth.render`).

The public API other parts of edgeline use::

    from converters.synth import Lighting, Conditions, generate_dataset, write_line_video, apply_lighting

Part families (``family="plate"``, ``"flange"``, ``"bracket"``, ``"hexnut"``, ``"gasket"``,
``"casting"`` or ``"pcb"``), the extra defect kinds (``crack``, ``stain``, ``chip``: only when named
in ``classes``) and out-of-distribution frames (:func:`render_ood`, :func:`generate_ood`) are for
evaluating on data a model was not tuned on. The pcb is the sealed family: kept for the next final
measurement, never for tuning (the bracket, the hex nut, the gasket and the casting, sealed before
it, have been used for the first four).
"""

from converters.synth.defects import EXTRA_DEFECTS
from converters.synth.folders import SynthResult, generate_dataset, generate_ood, render_batch
from converters.synth.lighting import Augment, Lighting, apply_lighting, lighting_augment, lighting_lut
from converters.synth.ood import OOD_KINDS, render_ood
from converters.synth.render import ALL_CLASSES, CLASSES, FAMILIES, FRAME_SIZE, Conditions, render_part
from converters.synth.video import FrameTruth, LineTruth, PartTruth, read_line_truth, truth_paths, write_line_video

__all__ = [
    "ALL_CLASSES",
    "CLASSES",
    "EXTRA_DEFECTS",
    "FAMILIES",
    "FRAME_SIZE",
    "OOD_KINDS",
    "Augment",
    "Conditions",
    "FrameTruth",
    "Lighting",
    "LineTruth",
    "PartTruth",
    "SynthResult",
    "apply_lighting",
    "generate_dataset",
    "generate_ood",
    "lighting_augment",
    "lighting_lut",
    "read_line_truth",
    "render_batch",
    "render_ood",
    "render_part",
    "truth_paths",
    "write_line_video",
]
