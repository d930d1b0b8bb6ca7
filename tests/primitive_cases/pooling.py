"""Test cases of the pooling primitive rules (jaxpr2sofie/primitives/pooling.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import Case, f32, i32


def _window(x, init, op, window, strides=None, padding="VALID", **kw):
    return lax.reduce_window(x, init, op, window, strides or (1,) * len(window), padding, **kw)


def _avg_exclude_pad(x):
    """flax/keras-style average pooling that divides by the real (unpadded) element count."""
    win, st = (1, 3, 3, 1), (1, 2, 2, 1)
    total = _window(x, 0.0, lax.add, win, st, "SAME")
    count = _window(jnp.ones_like(x), 0.0, lax.add, win, st, "SAME")
    return total / count


_NEG_INF, _POS_INF = -np.inf, np.inf
_jnp_w = np.linspace(-1.0, 2.0, 5 * 3 * 2, dtype=np.float32).reshape(1, 5, 3, 2)   # weights the pooled values

CASES = [
    Case("pool_max_2x2_nhwc", lambda x: _window(x, _NEG_INF, lax.max, (1, 2, 2, 1), (1, 2, 2, 1)),
         (f32(2, 6, 6, 3),), ("reduce_window_max",)),
    Case("pool_max_3x3_same_stride2", lambda x: _window(x, _NEG_INF, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME"),
         (f32(1, 7, 6, 2),), ("reduce_window_max",)),
    Case("pool_max_nchw_explicit_padding",
         lambda x: _window(x, _NEG_INF, lax.max, (1, 1, 2, 3), (1, 1, 2, 1), ((0, 0), (0, 0), (1, 1), (2, 0))),
         (f32(1, 2, 5, 5),), ("reduce_window_max",)),
    Case("pool_max_window_dilation",
         lambda x: _window(x, _NEG_INF, lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "SAME", window_dilation=(1, 2, 2, 1)),
         (f32(1, 6, 6, 2),), ("reduce_window_max",)),
    Case("pool_max_int32", lambda x: _window(x, np.int32(np.iinfo(np.int32).min), lax.max, (2, 2), (1, 2), "SAME"),
         (i32(5, 6, low=-50, high=50),), ("reduce_window_max",)),
    Case("pool_min_2x2", lambda x: _window(x, _POS_INF, lax.min, (1, 2, 2, 1), (1, 2, 2, 1), "SAME"),
         (f32(1, 5, 5, 3),), ("reduce_window_min",)),
    Case("pool_avg_2x2", lambda x: _window(x, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1)) / 4.0,
         (f32(2, 6, 4, 3),), ("reduce_window_sum", "div")),
    Case("pool_avg_same_exclude_padding", _avg_exclude_pad, (f32(1, 5, 5, 2),), ("reduce_window_sum", "div")),
    Case("pool_sum_1d_ncw_stride", lambda x: _window(x, 0.0, lax.add, (1, 1, 3), (1, 1, 2), ((0, 0), (0, 0), (1, 2))),
         (f32(2, 3, 9, scale=0.3),), ("reduce_window_sum",)),
    Case("pool_sum_base_dilation",
         lambda x: _window(x, 0.0, lax.add, (2, 3), (1, 2), ((1, 0), (0, 1)), base_dilation=(2, 1)),
         (f32(4, 5, scale=0.3),), ("reduce_window_sum",)),
    Case("pool_max_over_channels", lambda x: _window(x, _NEG_INF, lax.max, (1, 1, 1, 2), (1, 1, 1, 2)),
         (f32(1, 3, 3, 6),), ("reduce_window_max",)),
    Case("pool_sum_over_batch_3d", lambda x: _window(x, 0.0, lax.add, (2, 2, 1, 2, 1), (2, 1, 1, 2, 1), "SAME"),
         (f32(4, 3, 2, 4, 2, scale=0.3),), ("reduce_window_sum",)),
    Case("window_generic_add_init1", lambda x: _window(x, 1.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "SAME"),
         (f32(1, 4, 4, 2, scale=0.3),), ("reduce_window",)),
    Case("window_generic_mul", lambda x: _window(x, 1.0, lax.mul, (2, 2), (1, 1), "SAME"),
         (f32(4, 5, low=0.5, high=1.5),), ("reduce_window",)),
    Case("window_generic_max_init", lambda x: _window(x, 0.25, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME"),
         (f32(1, 5, 5, 2),), ("reduce_window",)),
    Case("window_generic_jnp_maximum", lambda x: _window(x, _NEG_INF, jnp.maximum, (1, 3), (1, 2), "SAME"),
         (f32(2, 7),), ("reduce_window",)),
]
# second shape for the min rule (every primitive is tested on at least two shapes)
CASES += [
    Case("pool_min_1d_stride_padding", lambda x: _window(x, _POS_INF, lax.min, (1, 3, 1), (1, 2, 1), ((0, 0), (1, 1), (0, 0))),
         (f32(2, 7, 3),), ("reduce_window_min",)),
]
# gradients of pooled networks (jax.grad): max pooling transposes to select_and_scatter_add
CASES += [
    Case("pool_max_grad_2x2", jax.grad(lambda x: (_window(x, _NEG_INF, lax.max, (1, 2, 2, 1), (1, 2, 2, 1)) ** 2).sum()),
         (f32(1, 6, 6, 2),), ("select_and_scatter_add",), ops=("SelectAndScatterAdd",)),
    # overlapping windows (stride 1) and padding: several windows pick one element, their values add up
    Case("pool_max_grad_overlap_same",
         jax.grad(lambda x: (_window(x, _NEG_INF, lax.max, (1, 3, 3, 1), (1, 1, 2, 1), "SAME") * _jnp_w).sum()),
         (f32(1, 5, 6, 2),), ("select_and_scatter_add",)),
    Case("pool_max_grad_ties", jax.grad(lambda x: _window(x, _NEG_INF, lax.max, (2, 2), (1, 1), "SAME").sum()),
         (np.round(f32(4, 5)),), ("select_and_scatter_add",)),
]
