"""edgeline: from the lab to offline inspection lines and back.

The shared core both sides import lives in :mod:`edgeline.core`; the device agent in ``edge_agent``,
the cloud registry in ``cloud_registry``, the build pipeline in ``converters`` and the device
configuration in ``firmware_configs`` (docs/architecture.md).
"""
