"""Loading the agent's plugins by name (``module:function``), as ``edgeline agent run`` does.

A factory is called with the device configuration and returns an :class:`AgentPlugin`, a list of
them, or None ("disabled by this config"). The default is the device's one assembly place,
:func:`edge_agent.assembly.build_plugins`.
"""

from __future__ import annotations

import importlib
import logging

from edge_agent.errors import EdgeAgentError, EdgelineError
from edge_agent.plugins import AgentPlugin
from firmware_configs.schema import DeviceConfig

log = logging.getLogger(__name__)

#: Plugin factories ``module:function(config: DeviceConfig) -> AgentPlugin | list[AgentPlugin] | None``
#: loaded by ``agent run``. A module or factory that is not there is skipped (with a warning for a
#: missing factory); a factory returning None means "disabled by this config".
DEFAULT_PLUGINS: tuple[str, ...] = ("edge_agent.assembly:build_plugins",)


class PluginError(EdgeAgentError):
    """A plugin named on the command line (or a default one) cannot be loaded or built."""

    default_reason = "plugin"


def load_plugins(config: DeviceConfig, specs: tuple[str, ...], *, required: bool) -> list[AgentPlugin]:
    """The plugins the factories ``specs`` build for ``config``. With ``required``, a missing module
    or factory is an error; otherwise it is skipped (a device installed without that part)."""
    plugins: list[AgentPlugin] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if required or exc.name != module_name:
                raise PluginError(f"cannot load plugin {spec}: {exc}") from exc
            log.debug("plugin module %s is not present; skipped", module_name)
            continue
        factory = getattr(module, attr or "build_plugin", None)
        if factory is None:
            if required:
                raise PluginError(f"plugin module {module_name} has no {attr or 'build_plugin'}")
            log.warning("plugin module %s has no %s factory yet; running without it", module_name, attr)
            continue
        try:
            built = factory(config)
        except EdgelineError as exc:
            raise PluginError(f"plugin {spec}: {exc}", reason=exc.reason) from exc
        if built is None:
            continue
        plugins.extend(built if isinstance(built, list | tuple) else [built])
    return plugins
