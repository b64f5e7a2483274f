"""A seeded mutation fuzzer for the bulk counts (100,000 examples per parser with ``--full``).

The property tests (hypothesis) explore and shrink but cost several milliseconds per example on these
machines; this runner costs tens of microseconds plus the parser itself, so every network and disk
parser gets its 100,000 examples in minutes. Inputs are mutations of VALID documents and bytes (a
value replaced, removed, added or re-typed; bytes flipped, inserted, deleted, truncated, spliced) and
plain random values, from ``random.Random(seed)``: a failure names the seed and the example number,
and ``EDGELINE_FUZZ_SEED`` replays it.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

AWKWARD = ["", "A", "0" * 64, "a" * 64, "ok", "x" * 300, "..", "/", "#", "+", "²", "\u0000", "NaN", "INFINITY"]
NUMBERS = [0, 1, -1, 2**31, 2**63, 2**70, -(2**70), 0.5, 1e308, -1e-308, 7]


class Mutator:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def scalar(self) -> Any:
        r = self.r
        pick = r.randrange(7)
        if pick == 0:
            return None
        if pick == 1:
            return r.random() < 0.5
        if pick == 2:
            return r.choice(NUMBERS)
        if pick == 3:
            return r.randint(-1000, 1000)
        if pick == 4:
            return r.uniform(-1e6, 1e6)
        if pick == 5:
            return r.choice(AWKWARD)
        return "".join(chr(r.choice([r.randrange(32, 127), r.randrange(0, 0x2FFF)])) for _ in range(r.randrange(12)))

    def value(self, depth: int = 0) -> Any:
        r = self.r
        if depth > 3 or r.random() < 0.6:
            return self.scalar()
        if r.random() < 0.5:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        return {str(self.scalar()): self.value(depth + 1) for _ in range(r.randrange(4))}

    def doc(self, valid: Any, max_mutations: int = 3) -> Any:
        """``valid`` with 1..max_mutations edits (like the hypothesis strategy ``mutated``)."""
        doc = copy.deepcopy(valid)
        for _ in range(self.r.randint(1, max_mutations)):
            paths = _paths(doc)
            path = self.r.choice(paths)
            op = self.r.choice(("replace", "delete", "add", "retype"))
            if not path:
                if op == "replace":
                    return self.value()
                continue
            parent = doc
            for p in path[:-1]:
                parent = parent[p]
            key = path[-1]
            if op == "replace":
                parent[key] = self.value()
            elif op == "delete":
                del parent[key]
            elif op == "add" and isinstance(parent, dict):
                parent[str(self.scalar())[:12] or "k"] = self.value()
            elif op == "retype":
                v = parent[key]
                parent[key] = str(v) if isinstance(v, int | float) else ([v] if isinstance(v, str) else None)
        return doc

    def bytes_(self, seed: bytes, max_edits: int = 4) -> bytes:
        r = self.r
        data = bytearray(seed)
        for _ in range(r.randint(1, max_edits)):
            at = r.randrange(len(data)) if data else 0
            op = r.randrange(5)
            if op == 0 and data:
                data[at] ^= r.randrange(1, 256)
            elif op == 1:
                data[at:at] = bytes(r.randrange(256) for _ in range(r.randint(1, 8)))
            elif op == 2 and data:
                del data[at : at + r.randint(1, 8)]
            elif op == 3:
                del data[at:]
            else:
                other = r.randrange(len(data)) if data else 0
                data[at:at] = data[other : other + r.randint(1, 16)]
        return bytes(data)

    def noise(self, max_size: int = 300) -> bytes:
        return bytes(self.r.randrange(256) for _ in range(self.r.randrange(max_size)))

    def payload(self, valid: Any) -> bytes:
        """A JSON payload near ``valid``: a mutated document, mutated bytes of it, or noise."""
        pick = self.r.random()
        if pick < 0.6:
            return json.dumps(self.doc(valid)).encode("utf-8", "surrogatepass")
        if pick < 0.9:
            return self.bytes_(json.dumps(valid).encode())
        return self.noise()


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


#: a target takes the mutator, runs one example, and says what became of it ("accepted", "refused", ...)
Target = Callable[[Mutator], str]


@dataclass
class Result:
    name: str
    examples: int
    seed: int
    seconds: float
    outcomes: Counter[str] = field(default_factory=Counter)


def run(name: str, target: Target, examples: int, seed: int | None = None) -> Result:
    seed = int(os.environ.get("EDGELINE_FUZZ_SEED", seed if seed is not None else time.time_ns() % 1_000_000))
    mut = Mutator(seed)
    res = Result(name, examples, seed, 0.0)
    t0 = time.perf_counter()
    for i in range(examples):
        try:
            res.outcomes[target(mut)] += 1
        except Exception as exc:
            raise AssertionError(f"{name}: example {i} of seed {seed} (EDGELINE_FUZZ_SEED={seed}): {exc!r}") from exc
    res.seconds = round(time.perf_counter() - t0, 1)
    report(res)
    return res


def report(res: Result) -> None:
    """One JSON line per target in ``$EDGELINE_FAULT_REPORT`` (docs/reliability.md is written from it)."""
    target = os.environ.get("EDGELINE_FAULT_REPORT")
    if not target:
        return
    doc = {"campaign": f"bulk fuzz {res.name}", "examples": res.examples, "seed": res.seed}
    doc.update(seconds=res.seconds, outcomes=dict(res.outcomes))
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(doc, sort_keys=True) + "\n")
