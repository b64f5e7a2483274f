"""Typed device configuration, shipped device profiles and deployment templates."""
