"""The device's durable outbox: what must reach the cloud, kept on disk until the ingest confirms it.

* :mod:`.store`: the SQLite outbox (idempotency keys, kinds, resend schedule), on its file
  (:mod:`.sqlite`: schema, WAL, a corrupt file set aside), with its drop policy (:mod:`.drops`) and
  its rows and figures (:mod:`.messages`);
* :mod:`.pump`: drains an outbox through the MQTT link (QoS 1, PUBACK, resend after reconnects);
* :mod:`.acks`: the ingest's end-to-end acknowledgements, applied to every outbox of the device.

Telemetry windows and the updater's deployment events both go through it (it used to be filed
under telemetry).
"""
