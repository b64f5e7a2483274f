"""The web console of the registry host (``edgeline console``): fleet, rollouts, models, drift and
alerts, audit; live over server-sent events from the registry's own MQTT view (one link, one
:class:`~cloud_registry.fleet.FleetWatcher`), actions through the same library calls as the CLI.

* :mod:`.auth`: password hashes, tokens, CSRF comparison, the login rate limit (pure).
* :mod:`.accounts`: accounts and sessions over the registry store.
* :mod:`.live`: the live view (broker link state, last-known rows) and the server-sent event hub.
* :mod:`.actions`: deploy, pause, resume, abort, rollback, each written to the audit log.
* :mod:`.pages` and :mod:`.widgets`: the HTML (escaped, small, no script but the one static file).
* :mod:`.app`: the Starlette application; :mod:`.server`: uvicorn, bind address and TLS.
"""
