"""reduce_window_{max,min,sum} and generic reduce_window -> Pool.

Average pooling has no primitive of its own: JAX emits reduce_window_sum followed by a division,
which the elementwise rules already convert.
"""
from __future__ import annotations

from jax import lax

from ..ir.ops.pool import Pool, SelectAndScatterAdd
from ..values import Const, Unsupported
from . import handles, out_aval

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
