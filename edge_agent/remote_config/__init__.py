"""Signed remote configuration on the device (docs/remote-config.md).

A signed config document arrives on the device's (or its group's) retained config topic. It is
verified like a deployment manifest (:mod:`.verify`), laid over the device's own configuration file
and validated by the same schema, checked for what a remote document may not do and for a working
station (:mod:`.overlay`, :mod:`.station`), then applied: without a restart for sinks, decision
thresholds and telemetry windows (:mod:`.apply`), by a controlled restart of the agent otherwise.
Either way it is on trial (:mod:`.trial`) until the agent has run healthily with it; a failed trial
or a crash during it goes back to the previous configuration, which is kept on disk
(:mod:`.store`). :mod:`.plugin` drives it; :mod:`.boot` gives ``edgeline agent run`` the
configuration to start with.
"""
