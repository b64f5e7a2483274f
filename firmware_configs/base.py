"""Base model for every config section: strict (unknown keys are errors), immutable.

Its configuration is the project's one strict base (:mod:`edgeline.core.strict`)."""

from __future__ import annotations

from edgeline.core.strict import Strict


class Section(Strict):
    """A config section (``[device]``, ``[cloud]``, ...)."""
