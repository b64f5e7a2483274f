"""The one strict base of every pydantic model of the project.

Strict: an unknown field is an error (nothing one side adds and the other ignores slips through);
frozen: a validated value cannot be changed behind its validation. :class:`StrictByName` also
accepts a field by its Python name where the wire spells it by an alias (``schema_`` / ``schema``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StrictByName(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


__all__ = ["Strict", "StrictByName"]
