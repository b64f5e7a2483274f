"""edgeline device agent: offline inference on camera frames, safe model updates, private telemetry.

This package must run with only ``pip install edgeline[agent]``: it never imports scikit-learn,
skl2onnx or onnx, nor anything of the cloud side (``cloud_registry``, ``converters``).
"""

__version__ = "0.1.0"
