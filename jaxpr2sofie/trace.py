"""Trace a function with `jax.make_jaxpr`: flatten params and inputs, name every leaf by its key path."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np

from .errors import TraceError
from .sofie.tensor import c_identifier

# Errors JAX raises when a Python-level decision or a shape depends on a traced value.
_DATA_DEPENDENT = tuple(
    getattr(jax.errors, n) for n in (
        "ConcretizationTypeError", "TracerBoolConversionError", "TracerIntegerConversionError",
        "NonConcreteBooleanIndexError", "TracerArrayConversionError")
    if hasattr(jax.errors, n))


def path_label(path) -> str:
    """`(DictKey('params'), DictKey('Dense_0'), DictKey('kernel'))` -> `params.Dense_0.kernel`."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(c_identifier(str(k)))
    return ".".join(parts)


@dataclass
class Traced:
    closed_jaxpr: Any                 # jax.extend.core.ClosedJaxpr over (param leaves..., input leaves...)
    param_labels: list
    param_values: list                # numpy arrays
    input_labels: list
    input_avals: list                 # (shape, dtype) per input leaf
    flat_fn: Callable                 # flat_fn(*param_leaves, *input_leaves) -> list of outputs

    def reference(self, *inputs) -> list:
        """Run the original function under JAX on flat inputs; flat list of numpy outputs."""
        outs = jax.jit(self.flat_fn)(*self.param_values, *inputs)
        return [np.asarray(o) for o in outs]


def _leaves_with_labels(tree, default: str):
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    labels, leaves = [], []
    for path, leaf in leaves_with_path:
        label = path_label(path) or default
        if label[0].isdigit():
            label = f"{default}_{label}"
        labels.append(label)
        leaves.append(leaf)
    return labels, leaves, treedef


def trace(fn: Callable, params, example_input) -> Traced:
    p_labels, p_leaves, p_tree = _leaves_with_labels(params, "param")
    x_labels, x_leaves, x_tree = _leaves_with_labels(example_input, "x")
    if not x_leaves:
        raise TraceError("example_input holds no arrays: pass an example array (or a pytree of arrays) "
                         "with the shape and dtype the model will be called with")
    p_values = [np.asarray(v) for v in p_leaves]
    n_p = len(p_leaves)

    def flat_fn(*args):
        p = jax.tree_util.tree_unflatten(p_tree, args[:n_p])
        x = jax.tree_util.tree_unflatten(x_tree, args[n_p:])
        y = fn(x) if params is None else fn(p, x)
        return jax.tree_util.tree_leaves(y)

    specs = [jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for v in p_values]
    specs += [jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for v in x_leaves]
    try:
        closed = jax.make_jaxpr(flat_fn)(*specs)
    except _DATA_DEPENDENT as e:
        first = str(e).strip().splitlines()[0]
        raise TraceError(
            "the function cannot be traced to a static graph: a shape or a Python `if`/`for`/`int()` depends on "
            f"the value of an input ({type(e).__name__}: {first}). Use lax.cond/jnp.where for branches, "
            "give data-dependent operations a static size (e.g. jnp.nonzero(x, size=N)), and keep shapes static."
        ) from e
    return Traced(closed, p_labels, p_values, x_labels,
                  [(tuple(np.shape(v)), np.asarray(v).dtype) for v in x_leaves], flat_fn)


def primitive_inventory(jaxpr, found=None) -> dict:
    """{primitive name: number of uses} over a jaxpr and every jaxpr nested in it."""
    import jax.extend.core as jex_core

    found = {} if found is None else found
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        found[eqn.primitive.name] = found.get(eqn.primitive.name, 0) + 1
    for sub in jex_core.subjaxprs(jaxpr):
        primitive_inventory(sub, found)
    return found
