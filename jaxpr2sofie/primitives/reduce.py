"""Reductions: reduce_sum/max/min/prod, argmax/argmin, cumulative sums/products/extrema."""
from __future__ import annotations

import numpy as np
from jax import lax

from ..ir.ops.reduce import ArgReduce, Cumulative, Reduce
from ..ir.ops.sort import Sort, TopK
from . import handles, out_aval

_REDUCE = {lax.reduce_sum_p: "sum", lax.reduce_max_p: "max", lax.reduce_min_p: "min", lax.reduce_prod_p: "prod"}


def _reduce_rule(kind):
    def rule(ctx, eqn, x):
        axes = tuple(sorted(int(a) for a in eqn.params["axes"]))
        if not axes:
            return x
        return ctx.add(Reduce([ctx.tensor(x)], kind=kind, axes=axes), hint=f"reduce_{kind}")
    rule.__name__ = f"_reduce_{kind}"
    return rule


for _prim, _kind in _REDUCE.items():
    handles(_prim, params=("axes",))(_reduce_rule(_kind))


def _arg_rule(kind):
    def rule(ctx, eqn, x):
        (axis,) = eqn.params["axes"]
        return ctx.add(ArgReduce([ctx.tensor(x)], kind=kind, axis=int(axis),
                                 index_dtype=np.dtype(eqn.params["index_dtype"]).name), hint=f"arg{kind}")
    rule.__name__ = f"_arg{kind}"
    return rule


handles(lax.argmax_p, params=("axes", "index_dtype"))(_arg_rule("max"))
handles(lax.argmin_p, params=("axes", "index_dtype"))(_arg_rule("min"))

_CUMULATIVE = {lax.cumsum_p: "sum", lax.cumprod_p: "prod", lax.cummax_p: "max", lax.cummin_p: "min"}


def _cumulative_rule(kind):
    def rule(ctx, eqn, x):
        assert out_aval(eqn).shape == ctx.shape(x)
        return ctx.add(Cumulative([ctx.tensor(x)], kind=kind, axis=int(eqn.params["axis"]),
                                  reverse=bool(eqn.params["reverse"])), hint=f"cum{kind}")
    rule.__name__ = f"_cum{kind}"
    return rule


for _prim, _kind in _CUMULATIVE.items():
    handles(_prim, params=("axis", "reverse"))(_cumulative_rule(_kind))


@handles(lax.sort_p, params=("dimension", "is_stable", "num_keys"))
def _sort(ctx, eqn, *operands):
    # Always a stable sort: an unstable one may order equal keys any way, stable is one of them.
    axis = int(eqn.params["dimension"]) % len(ctx.shape(operands[0]))
    op = Sort([ctx.tensor(x) for x in operands], axis=axis, num_keys=int(eqn.params["num_keys"]))
    out = ctx.add(op, hint="sort")
    return out if isinstance(out, list) else [out]


@handles(lax.top_k_p, params=("k", "axis"))
def _top_k(ctx, eqn, x):
    axis = int(eqn.params.get("axis", -1)) % len(ctx.shape(x))
    return ctx.add(TopK([ctx.tensor(x)], axis=axis, k=int(eqn.params["k"])), hint="top_k")
