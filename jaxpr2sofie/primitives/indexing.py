"""Indexing primitives: gather (x[idx], jnp.take, take_along_axis, embedding lookups, vmapped x[i]).

jnp's negative-index normalisation (lt/add/select_n) happens in the jaxpr before the gather,
so the rule only sees start indices and the out-of-bounds `mode`.
"""
from __future__ import annotations

import numpy as np
from jax import lax

from ..ir.ops.gather import Gather, Scatter
from ..values import Unsupported
from . import handles, out_aval

_DNUMS = ("offset_dims", "collapsed_slice_dims", "start_index_map",
          "operand_batching_dims", "start_indices_batching_dims")


def _default_fill(dtype: np.dtype):
    """The value lax.gather itself picks for FILL_OR_DROP when none is given."""
    if np.issubdtype(dtype, np.inexact):
        return float("nan")
    if np.issubdtype(dtype, np.signedinteger):
        return int(np.iinfo(dtype).min)
    if np.issubdtype(dtype, np.unsignedinteger):
        return int(np.iinfo(dtype).max)
    if dtype == np.bool_:
        return True
    raise Unsupported(f"gather fill for dtype {dtype}")


def _mode(eqn, dtype):
    """('clip' | 'fill', fill value). PROMISE_IN_BOUNDS clamps like CLIP, as XLA does on CPU."""
    mode = lax.GatherScatterMode.from_any(eqn.params["mode"])
    if mode in (lax.GatherScatterMode.CLIP, lax.GatherScatterMode.PROMISE_IN_BOUNDS):
        return "clip", None
    if mode == lax.GatherScatterMode.FILL_OR_DROP:
        fill = eqn.params.get("fill_value")
        return "fill", _default_fill(dtype) if fill is None else np.asarray(fill, dtype).item()
    raise Unsupported(f"gather mode {mode.name}: only clip, fill/drop and promise_in_bounds are converted")


@handles(lax.gather_p, params=("dimension_numbers", "slice_sizes", "mode", "fill_value",
                               # hints for XLA's scheduling; the result does not depend on them
                               "indices_are_sorted", "unique_indices"))
def _gather(ctx, eqn, operand, indices):
    dn = eqn.params["dimension_numbers"]
    dims = {k: tuple(int(d) for d in getattr(dn, k, ())) for k in _DNUMS}
    idx_shape = ctx.shape(indices)
    if not np.issubdtype(np.dtype(ctx.dtype(indices)), np.integer):
        raise Unsupported(f"gather with {ctx.dtype(indices)} indices (integers expected)")
    if not idx_shape or idx_shape[-1] != len(dims["start_index_map"]):
        raise Unsupported("gather whose index vector is not the last dimension of the indices")
    mode, fill = _mode(eqn, np.dtype(ctx.dtype(operand)))
    op = Gather([ctx.tensor(operand), ctx.tensor(indices)], **dims,
                slice_sizes=tuple(eqn.params["slice_sizes"]), mode=mode, fill_value=fill)
    out = ctx.add(op, hint="gather")
    want = tuple(out_aval(eqn).shape)
    if ctx.shape(out) != want:
        raise Unsupported(f"gather dimension numbers {dn} give shape {ctx.shape(out)}, JAX says {want}")
    return out


_SCATTER_KINDS = {lax.scatter_p: "set", lax.scatter_add_p: "add", lax.scatter_mul_p: "mul",
                  lax.scatter_min_p: "min", lax.scatter_max_p: "max"}
_SDNUMS = ("update_window_dims", "inserted_window_dims", "scatter_dims_to_operand_dims",
           "operand_batching_dims", "scatter_indices_batching_dims")


def _scatter_rule(kind):
    def rule(ctx, eqn, operand, indices, updates):
        dn = eqn.params["dimension_numbers"]
        if not ctx.shape(indices) or ctx.shape(indices)[-1] != len(dn.scatter_dims_to_operand_dims):
            raise Unsupported("scatter whose index vector is not the last dimension of the indices")
        mode = lax.GatherScatterMode.from_any(eqn.params["mode"])
        mode = "drop" if mode == lax.GatherScatterMode.FILL_OR_DROP else "clip"   # promise_in_bounds: clamp
        op = Scatter([ctx.tensor(operand), ctx.tensor(indices), ctx.tensor(updates)], kind=kind, mode=mode,
                     **{k: tuple(int(d) for d in getattr(dn, k, ())) for k in _SDNUMS})
        return ctx.add(op, hint="scatter")
    return rule


for _prim, _kind in _SCATTER_KINDS.items():
    # update_jaxpr/update_consts describe the combiner the primitive itself already names
    handles(_prim, params=("dimension_numbers", "indices_are_sorted", "unique_indices", "mode", "update_jaxpr",
                           "update_consts"))(_scatter_rule(_kind))
