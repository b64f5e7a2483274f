"""Device telemetry: private aggregate windows, drift scores, a local drift alarm and a durable outbox.

Modules: :mod:`.windows` (aggregation), :mod:`.drift` (PSI with calibrated thresholds, episodes),
:mod:`.privacy` (pseudonyms, minimum frame count, Laplace noise), :mod:`.outbox` (SQLite WAL queue),
:mod:`.pump` (outbox -> MQTT; a PUBACK marks a message sent), :mod:`.acks` (the ingest's
acknowledgements delete it), :mod:`.alarm` (local drift events) and
:mod:`.plugin` (the agent plugin tying them together). Nothing here imports the cloud side.
"""
