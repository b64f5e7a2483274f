"""Cloud side of telemetry: ingest (validate, deduplicate, store), drift reports, alerts and the
retraining loop. Drift arithmetic is shared with the device (:mod:`edge_agent.telemetry.drift`)."""
