"""The device's durable outbox: what must reach the cloud, kept on disk until the ingest confirms it.

* :mod:`.store`: the SQLite outbox (idempotency keys, kinds, resend schedule, drop policy);
* :mod:`.pump`: drains an outbox through the MQTT link (QoS 1, PUBACK, resend after reconnects);
* :mod:`.acks`: the ingest's end-to-end acknowledgements, applied to every outbox of the device.

Telemetry windows and the updater's deployment events both go through it (it used to be filed
under telemetry).
"""
