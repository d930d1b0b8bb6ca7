"""reduce_window_{max,min,sum} and generic reduce_window -> Pool.

Average pooling has no primitive of its own: JAX emits reduce_window_sum followed by a division,
which the elementwise rules already convert.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..ir.ops.pool import Pool, SelectAndScatterAdd
from ..values import Const, Unsupported
from . import handles, out_aval
from .cases import Case, f32, i32

_WINDOW_PARAMS = ("window_dimensions", "window_strides", "padding", "base_dilation", "window_dilation")


def _pool(ctx, eqn, x, kind, init=None):
    p = eqn.params
    if isinstance(p["padding"], str):
        raise Unsupported(f"padding given as {p['padding']!r}: expected explicit (low, high) pairs in the jaxpr")
    op = Pool([ctx.tensor(x)], kind=kind,
              window=tuple(int(k) for k in p["window_dimensions"]),
              strides=tuple(int(s) for s in p["window_strides"]),
              padding=tuple((int(lo), int(hi)) for lo, hi in p["padding"]),
              base_dilation=tuple(int(d) for d in p["base_dilation"]),
              window_dilation=tuple(int(d) for d in p["window_dilation"]),
              init=init)
    y = ctx.add(op, hint=f"{kind}_pool")
    want = tuple(out_aval(eqn).shape)
    if ctx.shape(y) != want:
        raise Unsupported(f"pool output shape {ctx.shape(y)} differs from JAX's {want}")
    return y


def _fixed_rule(kind):
    def rule(ctx, eqn, x):
        return _pool(ctx, eqn, x, kind)
    rule.__name__ = f"_reduce_window_{kind}"
    return rule


for _prim, _kind in ((lax.reduce_window_max_p, "max"), (lax.reduce_window_min_p, "min"),
                     (lax.reduce_window_sum_p, "sum")):
    handles(_prim, params=_WINDOW_PARAMS)(_fixed_rule(_kind))


# A reducer jaxpr of one of these binary primitives, applied to its two arguments.
_REDUCERS = {"add": "sum", "mul": "prod", "max": "max", "min": "min"}


def _reducer_kind(jaxpr, consts) -> str:
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)   # ClosedJaxpr in some JAX versions, Jaxpr in others
    if consts or getattr(jaxpr, "constvars", ()):
        raise Unsupported("reduce_window whose reducer closes over constants: only a plain "
                          "add/mul/max/min reducer is supported")
    eqns = jaxpr.eqns
    if len(eqns) != 1:
        names = [e.primitive.name for e in eqns]
        raise Unsupported(f"reduce_window with a reducer of {len(eqns)} equations {names}: only a single "
                          "add/mul/max/min is supported")
    (e,) = eqns
    name = e.primitive.name
    if name not in _REDUCERS:
        raise Unsupported(f"reduce_window with a `{name}` reducer: only add/mul/max/min are supported")
    if (len(jaxpr.invars) != 2 or set(e.invars) != set(jaxpr.invars) or len(e.invars) != 2
            or list(jaxpr.outvars) != list(e.outvars)):
        raise Unsupported(f"reduce_window whose reducer is not `{name}` of its two arguments")
    return _REDUCERS[name]


@handles(lax.reduce_window_p, params=("jaxpr", "consts", *_WINDOW_PARAMS))
def _reduce_window(ctx, eqn, *operands):
    if len(operands) != 2:
        raise Unsupported(f"reduce_window over {len(operands) // 2} operands at once (a variadic window "
                          "reduction, e.g. an arg-max pool): only a single operand is supported")
    x, init = operands
    kind = _reducer_kind(eqn.params["jaxpr"], eqn.params["consts"])
    if not isinstance(init, Const):
        raise Unsupported("reduce_window whose initial value is computed at run time: it must be a constant")
    return _pool(ctx, eqn, x, kind, init=init.array.reshape(()).item())


# -- test cases -----------------------------------------------------------------------------------

@handles(lax.select_and_scatter_add_p, params=("select_prim", "window_dimensions", "window_strides", "padding"))
def _select_and_scatter_add(ctx, eqn, source, operand):
    # The transpose of max/min pooling, which jax.grad of a pooled network produces.
    p = eqn.params
    select = p["select_prim"].name
    if select not in ("ge", "le"):
        raise Unsupported(f"select_and_scatter_add selecting with {p['select_prim'].name} (ge or le expected)")
    op = SelectAndScatterAdd([ctx.tensor(source), ctx.tensor(operand)], select=select,
                             window=tuple(p["window_dimensions"]), strides=tuple(p["window_strides"]),
                             padding=tuple(tuple(int(v) for v in lh) for lh in p["padding"]))
    return ctx.add(op, hint="pool_grad")


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
