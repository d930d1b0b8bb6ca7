"""Test cases of the indexing primitive rules (jaxpr2sofie/primitives/indexing.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import Case, f32, i32


_NORMALISE = ("lt", "add", "select_n", "broadcast_in_dim")   # jnp's negative-index fix-up


def _vmapped_index(x, i):
    return jax.vmap(lambda row, k: row[k])(x, i)


def _windows(mode):
    """2x3 windows at (row, col) = (i[:, 1], i[:, 0]); the window dims interleave with the batch dim."""
    dn = lax.GatherDimensionNumbers(offset_dims=(0, 2), collapsed_slice_dims=(), start_index_map=(1, 0))
    return lambda x, i: lax.gather(x, i, dn, slice_sizes=(2, 3), mode=mode)


_CORNERS = np.array([[0, 0], [4, 1], [-1, 2], [2, 9], [3, 3]], np.int32)   # some past the edge


CASES = [
    Case("gather_index_rows", lambda x, i: x[i], (f32(5, 4), i32(3, high=5)),
         primitives=("gather", *_NORMALISE)),
    Case("gather_index_columns", lambda x, i: x[:, i], (f32(3, 6), i32(4, low=-6, high=6)),
         primitives=("gather", *_NORMALISE)),
    Case("gather_index_two_axes", lambda x, i, j: x[i, j], (f32(4, 5, 3), i32(2, 3, high=4), i32(2, 3, high=5)),
         primitives=("gather", "concatenate", *_NORMALISE)),
    Case("gather_index_const", lambda x: x[jnp.array([2, 0, 1, 2])], (f32(3, 4),),
         primitives=("gather", *_NORMALISE)),
    Case("gather_take_axis1", lambda x, i: jnp.take(x, i, axis=1), (f32(3, 5), i32(2, 2, high=5)),
         primitives=("gather", "jit", *_NORMALISE)),
    Case("gather_take_clip", lambda x, i: jnp.take(x, i, axis=0, mode="clip"),
         (f32(4, 3), np.array([0, -3, 7, 2, 3], np.int32)), primitives=("gather", "jit", "broadcast_in_dim")),
    # Default jnp.take mode is fill: rows out of range even after negative wrapping read NaN.
    Case("gather_take_fill_out_of_range", lambda x, i: jnp.take(x, i, axis=0),
         (f32(4, 3), np.array([1, 9, -2, -7, 3], np.int32)), primitives=("gather", "jit", *_NORMALISE)),
    Case("gather_take_fill_int32", lambda x, i: jnp.take(x, i, axis=1),
         (i32(3, 4, low=-50, high=50), np.array([3, 4, -1, -5], np.int32)), primitives=("gather", "jit", *_NORMALISE)),
    Case("gather_take_along_axis", lambda x, i: jnp.take_along_axis(x, i, axis=1),
         (f32(3, 5), i32(3, 4, high=5)), primitives=("gather", "jit", "lt", "add", "select_n", "reshape")),
    Case("gather_embed_lookup", lambda p, t: p["emb"][t], (i32(2, 5, high=10),),
         params={"emb": f32(10, 8)}, primitives=("gather", *_NORMALISE)),
    Case("gather_index_vmap_batched", _vmapped_index, (f32(3, 4, 5), i32(3, 2, high=4)),
         primitives=("gather", *_NORMALISE)),
    Case("gather_index_windows_clip", _windows("clip"), (f32(5, 6), _CORNERS), primitives=("gather",)),
    Case("gather_index_windows_fill", _windows("fill"), (f32(5, 6), _CORNERS), primitives=("gather",)),
    # vmap of a scalar index becomes a CLIP gather with operand batching dims and size-1 slices.
    Case("gather_index_vmap_scalar_clip", _vmapped_index, (f32(4, 6), np.array([0, 5, 9, -2], np.int32)),
         primitives=("gather", "squeeze", *_NORMALISE)),
    # scatter: x.at[...] updates, also with indices computed at run time (a loop counter)
    Case("scatter_set_row", lambda x, i: x.at[i[0]].set(-1.0), (f32(5, 3), np.array([3], np.int32)),
         primitives=("scatter",), ops=("Scatter",)),
    Case("scatter_set_dropped_out_of_range", lambda x, i: x.at[i].set(x[:2] * 2.0),
         (f32(5, 3), np.array([7, -2], np.int32)), primitives=("scatter",)),
    Case("scatter_add_columns_duplicates", lambda x, i, u: x.at[:, i].add(u),
         (f32(3, 6), np.array([1, 4, 1], np.int32), f32(3, 3)), primitives=("scatter-add",)),
    Case("scatter_add_int_clip", lambda x, i: x.at[i].add(5, mode="clip"), (i32(4, 2), np.array([0, 9, -3], np.int32)),
         primitives=("scatter-add",)),
    Case("scatter_mul_min_max", lambda x, i: (x.at[i].multiply(3.0), x.at[i].min(0.0), x.at[i].max(0.5)),
         (f32(4, 3), np.array([[1], [3]], np.int32)), primitives=("scatter-mul", "scatter-min", "scatter-max")),
    Case("scatter_mul_min_max_rank1", lambda x, i: (x.at[i].multiply(-2.0), x.at[i].min(-0.1), x.at[i].max(0.1)),
         (f32(6), np.array([5, 0, 2], np.int32)), primitives=("scatter-mul", "scatter-min", "scatter-max")),
    Case("scatter_in_fori_loop", lambda x: lax.fori_loop(1, 5, lambda i, a: a.at[i].set(a[i - 1] * 0.5 + a[i]), x),
         (f32(5, 3),), primitives=("scatter", "scan"), ops=("Loop", "Scatter")),
]
