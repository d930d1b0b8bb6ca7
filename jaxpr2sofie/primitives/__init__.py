"""The one primitive table: primitive name -> handler.

A handler reads one jaxpr equation and adds operators to the graph; it never writes C++.
Register with `@handles(lax.tanh_p, params=(...))`, listing every equation parameter the rule
reads or knowingly ignores: any other parameter (a JAX upgrade that changes a lowering) is
reported as unsupported instead of silently mis-converted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Parameters that never change the maths of any primitive.
IGNORED_PARAMS = frozenset({"accuracy", "out_sharding", "sharding"})


@dataclass(frozen=True)
class Handler:
    fn: Callable
    params: frozenset
    family: str

    def unexpected(self, params: dict) -> set:
        """Equation parameters this rule neither reads nor knowingly ignores."""
        return set(params) - IGNORED_PARAMS - self.params


HANDLERS: dict[str, Handler] = {}


def handles(*prims, params=()):
    def register(fn):
        for p in prims:
            name = p if isinstance(p, str) else p.name
            if name in HANDLERS:
                raise RuntimeError(f"primitive {name!r} registered twice ({HANDLERS[name].fn.__module__} and {fn.__module__})")
            HANDLERS[name] = Handler(fn, frozenset(params), fn.__module__.rsplit(".", 1)[-1])
        return fn
    return register


# Primitives of the table that the installed JAX does not define (an older release): their rules are
# not registered, and the functions that bind them in newer releases lower to primitives the table
# already has (jnp.stack to broadcast_in_dim + concatenate before jax 0.10.1).
ABSENT_FROM_JAX: set = set()


def if_defined(module, attr: str, name: str = ""):
    """`module.attr` as a one-element tuple for `handles(*...)`, or () where this JAX lacks it."""
    prim = getattr(module, attr, None)
    if prim is None:
        ABSENT_FROM_JAX.add(name or attr.removesuffix("_p"))
        return ()
    return (prim,)


def check_params(handler: Handler, params: dict) -> set:
    return handler.unexpected(params)


def out_aval(eqn, k: int = 0):
    return eqn.outvars[k].aval


# Every family, imported explicitly: a broken module fails loudly at import.
from . import control, conv, elementwise, indexing, linalg, pooling, reduce, shape  # noqa: E402,F401
