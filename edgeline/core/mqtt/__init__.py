"""The parts of the MQTT link: its settings, the pure connection plan (addresses, protocol versions,
backoff), the SUBACK bookkeeping and the broker probe. :mod:`edgeline.core.mqtt_link` is the link."""
