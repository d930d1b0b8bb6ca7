"""The primitive table's test cases as data: one module per family, named as the rule module it
tests (jaxpr2sofie/primitives/<family>.py), each with a `CASES` list. They live here, not in the
installed package: building them (jnp arrays) costs an import, and only the tests need them.

`tests/test_primitives.py` turns every case into a differential test (convert -> compile ->
compare with JAX), and the coverage test checks that every registered primitive has a case
and that each case's jaxpr really contains the primitives it claims.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

_rng = np.random.default_rng(1234)


def f32(*shape, scale=1.0, low=None, high=None):
    """A deterministic float32 example input (normal, or uniform in [low, high))."""
    if low is not None:
        return _rng.uniform(low, high, shape).astype(np.float32)
    return (scale * _rng.standard_normal(shape)).astype(np.float32)


def i32(*shape, low=0, high=10):
    return _rng.integers(low, high, shape).astype(np.int32)


def boolean(*shape):
    return _rng.random(shape) < 0.5


@dataclass
class Case:
    name: str
    fn: Callable                  # fn(*inputs), or fn(params, *inputs) when params is given
    inputs: tuple
    primitives: tuple             # primitive names the traced jaxpr must contain
    params: Any = None
    atol: float = 1e-5            # |C++ - JAX| <= atol * max(1, |JAX|), elementwise
    known_bug: str = ""           # a reproducer of an open bug: skipped with this reason until fixed
    tags: tuple = field(default_factory=tuple)
    ops: tuple = ()               # operator types the converted graph (sub-graphs included) must contain
    no_ops: tuple = ()            # ... and must not contain (e.g. a scan must not be unrolled into Concat)
    batch: str | None = None      # "dynamic": traced with a run-time batch, checked at two batch sizes


def all_cases() -> list:
    # the example inputs come from one seeded generator, drawn as each module is imported: shape
    # first, then the rest alphabetically (the order the inputs were first drawn in)
    from . import shape  # noqa: I001
    from . import control, conv, elementwise, indexing, linalg, pooling, reduce
    out = []
    for mod in (elementwise, shape, linalg, reduce, indexing, conv, pooling, control):
        out.extend(getattr(mod, "CASES", []))
    names = [c.name for c in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RuntimeError(f"duplicate case names: {sorted(dup)}")
    return out
