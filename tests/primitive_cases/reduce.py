"""Test cases of the reduce primitive rules (jaxpr2sofie/primitives/reduce.py)."""
from __future__ import annotations

import jax.numpy as _jnp
import numpy as np
from jax import lax

from . import Case, f32, i32


CASES = [
    Case("reduce_sum_axes", lambda x: (x.sum(axis=1), x.sum(axis=(0, 2)), x.sum()), (f32(3, 4, 5),), ("reduce_sum",),
         ops=("ReduceSum",)),
    Case("reduce_max_min", lambda x: (x.max(axis=0), x.min(axis=-1)), (f32(3, 4, 5),), ("reduce_max", "reduce_min")),
    Case("reduce_prod", lambda x: _jnp.prod(x, axis=1), (f32(3, 4, low=0.5, high=1.5),), ("reduce_prod",)),
    Case("reduce_int", lambda x: (x.sum(axis=1), x.max(axis=0), x.min(axis=0)), (i32(3, 4, low=-9, high=9),),
         ("reduce_sum", "reduce_max", "reduce_min")),
    Case("reduce_mean_var", lambda x: (x.mean(axis=-1), x.var(axis=-1)), (f32(4, 6),), ("reduce_sum",)),
    Case("reduce_of_transposed", lambda x: x.T.sum(axis=1), (f32(3, 5),), ("reduce_sum", "transpose")),
    # found by tests/fuzz: reductions over a zero-size axis (sum is 0, max is its initial value)
    Case("reduce_over_empty_axis", lambda x: (_jnp.sum(x[:, 4:], axis=1) + x[:, 0], _jnp.max(x[:, :0], axis=0, initial=-1.0)),
         (f32(3, 4),), ("reduce_sum", "reduce_max")),
    # found by tests/fuzz: a 0-d output computed from weights only is folded to a constant, and
    # must keep its shape () (np.ascontiguousarray used to make it (1,))
    Case("folded_scalar_output", lambda p, x: (_jnp.argmin(p["k"][1:4]), _jnp.sum(p["k"]), x * 2.0), (f32(2, 3),),
         ("argmin", "reduce_sum"), params={"k": f32(5)}),
    Case("argmax_argmin", lambda x: (_jnp.argmax(x, axis=1), _jnp.argmin(x, axis=0)), (f32(4, 6),),
         ("argmax", "argmin")),
    Case("argmax_ties_3d", lambda x: _jnp.argmax(x, axis=2), (i32(2, 3, 4, high=3).astype("float32"),), ("argmax",)),
    Case("cumsum", lambda x: (_jnp.cumsum(x, axis=1), _jnp.cumsum(x, axis=0)), (f32(3, 5),), ("cumsum",)),
    Case("cumsum_reverse", lambda x: lax.cumsum(x, axis=1, reverse=True), (f32(3, 5),), ("cumsum",)),
    Case("cumprod_cummax_cummin", lambda x: (_jnp.cumprod(x, axis=1), lax.cummax(x, axis=0), lax.cummin(x, axis=1)),
         (f32(3, 5, low=0.5, high=1.5),), ("cumprod", "cummax", "cummin")),
    Case("layer_norm", lambda x: (x - x.mean(-1, keepdims=True)) * lax.rsqrt(x.var(-1, keepdims=True) + 1e-5),
         (f32(4, 16, scale=2.0),), ("reduce_sum", "rsqrt")),
]
# second shapes for the rules above (every primitive is tested on at least two shapes)
CASES += [
    Case("argmin_rank1_and_3d", lambda a, b: (_jnp.argmin(a), _jnp.argmin(b, axis=1)), (f32(9), f32(2, 5, 3)),
         ("argmin",)),
    Case("reduce_prod_rank4", lambda x: _jnp.prod(x, axis=(1, 3)), (f32(2, 3, 2, 4, low=0.6, high=1.4),),
         ("reduce_prod",)),
    Case("cumulative_rank3", lambda x: (_jnp.cumprod(x, axis=2), lax.cummax(x, axis=1, reverse=True),
                                        lax.cummin(x, axis=0)), (f32(2, 3, 4, low=0.6, high=1.4),),
         ("cumprod", "cummax", "cummin")),
]
CASES += [
    Case("sort_last_axis", lambda x: _jnp.sort(x, axis=-1), (f32(3, 7),), ("sort",), ops=("Sort",)),
    Case("sort_descending_axis0_with_ties_nan", lambda x: _jnp.sort(x, axis=0, descending=True),
         (np.array([[1.0, -0.0, 2.0], [np.nan, 0.0, 2.0], [-1.0, 3.0, np.inf], [1.0, -np.inf, 2.0]], np.float32),),
         ("sort",)),
    Case("argsort_ties_stable", lambda x: _jnp.argsort(x, axis=1), (np.round(f32(4, 6)),), ("sort", "iota")),
    Case("sort_int_lexsort", lambda a, b: lax.sort((a, b), num_keys=2), (i32(2, 9, high=3), i32(2, 9, high=9)),
         ("sort",)),
    Case("top_k_last_axis", lambda x: lax.top_k(x, 3), (f32(4, 9),), ("top_k",), ops=("TopK",)),
    Case("top_k_ties_int_rank1", lambda x: lax.top_k(x, 4), (i32(10, high=4),), ("top_k",)),
]
