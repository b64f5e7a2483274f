"""Errors of the broker security tooling (certificates, passwords, broker configuration)."""

from __future__ import annotations

from cloud_registry.errors import RegistryError


class SecurityError(RegistryError):
    """A certificate, password file, key or broker security configuration is missing, invalid or unsafe."""

    default_reason = "security"
