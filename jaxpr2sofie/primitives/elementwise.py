"""Elementwise primitives: arithmetic, transcendentals, comparisons, select_n, clamp, casts."""
from __future__ import annotations

import numpy as np
from jax import lax

import jax.extend.core.primitives as P

from ..ir.ops.elementwise import Elementwise
from ..values import Const
from . import handles, out_aval


def _emit(ctx, eqn, kind, args, param=None):
    aval = out_aval(eqn)
    op = Elementwise.make(kind, [ctx.operand(a) for a in args], aval.dtype, param, shape=aval.shape)
    return ctx.add(op, hint=kind)


def _table_rule(kind):
    def rule(ctx, eqn, *args):
        return _emit(ctx, eqn, kind, args)
    rule.__name__ = f"_{kind}"
    return rule


# primitive -> operator kind; these need nothing from the equation but their operands.
SIMPLE = {
    lax.neg_p: "neg", lax.exp_p: "exp", lax.exp2_p: "exp2", lax.log_p: "log", lax.log1p_p: "log1p",
    lax.expm1_p: "expm1", lax.sqrt_p: "sqrt", lax.rsqrt_p: "rsqrt", lax.cbrt_p: "cbrt", lax.tanh_p: "tanh",
    lax.logistic_p: "logistic", lax.erf_p: "erf", lax.erfc_p: "erfc", lax.abs_p: "abs", lax.sign_p: "sign", lax.floor_p: "floor",
    lax.ceil_p: "ceil", lax.sin_p: "sin", lax.cos_p: "cos", lax.tan_p: "tan", lax.atan_p: "atan",
    lax.sinh_p: "sinh", lax.cosh_p: "cosh", lax.asinh_p: "asinh", lax.acosh_p: "acosh", lax.atanh_p: "atanh",
    lax.asin_p: "asin", lax.acos_p: "acos", lax.square_p: "square", lax.is_finite_p: "is_finite",
    lax.add_p: "add", lax.sub_p: "sub", lax.mul_p: "mul", lax.div_p: "div", lax.rem_p: "rem", lax.pow_p: "pow",
    lax.atan2_p: "atan2", lax.min_p: "min",
    lax.eq_p: "eq", lax.ne_p: "ne", lax.lt_p: "lt", lax.le_p: "le", lax.gt_p: "gt", lax.ge_p: "ge",
    lax.and_p: "and", lax.or_p: "or", lax.xor_p: "xor", lax.not_p: "not", lax.clamp_p: "clamp",
    P.add_jaxvals_p: "add",   # add_any: the sum of two cotangents in a gradient
}
for _prim, _kind in SIMPLE.items():
    # out_dtype (mul): the result type is read from the output aval, so it needs no handling
    handles(_prim, params=("out_dtype",))(_table_rule(_kind))


def _is_zero(v) -> bool:
    return isinstance(v, Const) and v.array.size == 1 and float(v.array.reshape(())) == 0.0


@handles(lax.max_p, params=("out_dtype",))
def _max(ctx, eqn, x, y):
    # max(x, 0) is a ReLU; recognising it keeps the generated code readable and SOFIE-like.
    if _is_zero(y) and isinstance(x, str):
        return _emit(ctx, eqn, "relu", [x])
    if _is_zero(x) and isinstance(y, str):
        return _emit(ctx, eqn, "relu", [y])
    return _emit(ctx, eqn, "max", [x, y])


@handles(lax.integer_pow_p, params=("y",))
def _integer_pow(ctx, eqn, x):
    return _emit(ctx, eqn, "integer_pow", [x], param=eqn.params["y"])


@handles(lax.round_p, params=("rounding_method",))
def _round(ctx, eqn, x):
    even = int(eqn.params["rounding_method"]) == int(lax.RoundingMethod.TO_NEAREST_EVEN)
    return _emit(ctx, eqn, "round_even" if even else "round_away", [x])


@handles(lax.select_n_p)
def _select_n(ctx, eqn, which, *cases):
    return _emit(ctx, eqn, "select", [which, *cases], param=len(cases))


@handles(lax.convert_element_type_p, params=("new_dtype", "weak_type"))
def _convert_element_type(ctx, eqn, x):
    if np.dtype(eqn.params["new_dtype"]) == np.dtype(ctx.dtype(x)):
        return x
    return _emit(ctx, eqn, "cast", [x])
