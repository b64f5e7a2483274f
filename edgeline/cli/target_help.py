"""The one wording of ``--to`` in every command's help: the unit forms a target takes, a station's
among them (docs/stations.md, "Rollouts, shadow deployments, remote config, fleet view")."""

from __future__ import annotations

#: deploy, rollback, shadow promote: any number of units (cloud_registry.station_targets)
UNITS_HELP = (
    "group:NAME, device:DEV[,DEV...] (a device with stations: every station of it), or one station "
    "as station:DEV/ST or DEV~ST (several: station:DEV/ST,DEV/ST)"
)
#: config push / reset / status: one device, one station or one group (cloud_registry.remote_config)
CONFIG_TARGET_HELP = "device:DEV, group:NAME, or one station as station:DEV/ST or DEV~ST (that station's own document)"
