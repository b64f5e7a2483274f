"""Hypothesis settings and strategies for the parser fuzz tests.

Every test takes :func:`fuzz_settings`: modest example counts by default (the whole fuzz suite runs
in seconds), thousands with ``pytest --full``. ``deadline=None`` everywhere: a slow example on a busy
2-core machine is not a failure. Strategies build arbitrary JSON values, arbitrary bytes, and
mutations of VALID documents (a field replaced, removed, added or re-typed), which reach much deeper
into a parser than random noise does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]
_FULL = {"on": False}


def pytest_configure(config: pytest.Config) -> None:
    # called when this conftest is registered, before the fuzz modules are imported
    _FULL["on"] = bool(config.getoption("--full", default=False))


def fuzz_settings(ci: int = 60, full: int = 1500) -> settings:
    """Settings for one fuzz test: ``ci`` examples by default, ``full`` with ``pytest --full``.
    Applied per test (not as a global profile) so other areas' hypothesis tests keep their own."""
    return settings(max_examples=full if _FULL["on"] else ci, deadline=None, suppress_health_check=_HEALTH)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--full`` a property test runs thousands of examples: lift the per-test timeout here."""
    if not config.getoption("--full", default=False):
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(3600))


#: scalars a JSON document can hold, with the awkward ones well represented
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "A", "0" * 64, "a" * 64, "ok", "x" * 300, "..", "/", "#", "+", "²", "\u0000"])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
#: JSON text that is often valid, sometimes not
json_texts = json_values.map(lambda v: __import__("json").dumps(v)) | st.text(max_size=200)
payloads = st.binary(max_size=600) | json_texts.map(lambda s: s.encode("utf-8", "surrogatepass"))


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``doc`` (dict keys and list indexes)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path[:-1]:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw: st.DrawFn, valid: Any, max_mutations: int = 3) -> Any:
    """``valid`` with 1..max_mutations random edits: replace a value (any JSON), delete a key or list
    item, add an unknown key, or swap the type of a number/string."""
    doc = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, max_mutations))):
        candidates = paths(doc)
        path = draw(st.sampled_from(candidates))
        op = draw(st.sampled_from(["replace", "delete", "add", "retype"]))
        if not path:  # the root itself
            if op == "replace":
                return draw(json_values)
            continue
        parent, key = _parent(doc, path), path[-1]
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "delete":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        elif op == "retype":
            v = parent[key]
            parent[key] = str(v) if isinstance(v, int | float) else ([v] if isinstance(v, str) else None)
    return doc
