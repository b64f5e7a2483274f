"""edgeline cloud side: registry, artifact store, rollouts over MQTT, fleet view, telemetry ingest,
drift detection, alerts and retraining."""
