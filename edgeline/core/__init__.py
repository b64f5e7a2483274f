"""The shared core: what the device and the cloud both need, and nothing else.

* :mod:`edgeline.core.protocol`: topics, message schemas, the manifest, canonical JSON and the
  verify side of signatures (the wire protocol: docs/protocol.md);
* :mod:`edgeline.core.mqtt_link`: the one MQTT client wrapper;
* :mod:`edgeline.core.fsutil`: durable file writes;
* :mod:`edgeline.core.errors`: the project's exception root and the errors of the above;
* :mod:`edgeline.core.strict`: the one strict base of every pydantic model (unknown fields refused, frozen).

It imports no other edgeline package (tests/test_architecture.py).
"""
