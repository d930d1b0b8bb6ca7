"""Elementwise operators as SOFIE's BasicUnary/BasicBinary/BasicNary, Relu, Tanh, Sigmoid, Erf,
Comparison, Where, Clip and Cast; a short composition where SOFIE has no operator for the kind
(rsqrt = Reciprocal(Sqrt), expm1 = Exp - 1, ...). SOFIE's templated operators are float only, so
integer arithmetic has no rule here (route="onnx" reads it)."""
from __future__ import annotations

import numpy as np

from ..ir.ops.base import rule_registry
from ..ir.ops.elementwise import Elementwise, Scalar
from ..ir.tensor import broadcast_shapes
from .context import NotBuildable, builds

BASIC_UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "abs": "Abs", "sin": "Sin",
               "cos": "Cos", "floor": "Floor"}
ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "erf": "Erf", "identity": "Identity"}
BASIC_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow"}
NARY = {"max": "Max", "min": "Min"}
COMPARISONS = {"eq": "Eq", "lt": "Less", "le": "LessEq", "gt": "Greater", "ge": "GreaterEq"}

# kinds SOFIE has no operator for, spelled with a few of its operators: kind -> rule(ctx, op, *xs)
COMPOSED, composed = rule_registry("RModel composed elementwise")


def unary(ctx, kind, x):
    s = ctx.sofie
    if kind in BASIC_UNARY:
        return ctx.unary(getattr(s, f"ROperator_BasicUnary_float_{BASIC_UNARY[kind]}"), x, kind)
    if kind in ACTIVATIONS:
        return ctx.unary(getattr(s, f"ROperator_{ACTIVATIONS[kind]}")["float"], x, kind)
    if kind == "reciprocal":
        return ctx.unary(s.ROperator_BasicUnary_float_Reciprocal, x, kind)
    raise NotBuildable(f"elementwise {kind} has no SOFIE operator")


def binary(ctx, kind, a, b, dtype="float32"):
    s = ctx.sofie
    out = ctx.fresh(kind)
    shape = _broadcast(ctx.shape(a), ctx.shape(b))
    if kind in BASIC_BINARY:
        return ctx.add(getattr(s, f"ROperator_BasicBinary_float_{BASIC_BINARY[kind]}")(a, b, out), [a, b], [out], shape)
    if kind in NARY:
        return ctx.add(getattr(s, f"ROperator_BasicNary_float_{NARY[kind]}")([a, b], out), [a, b], [out], shape)
    if kind in COMPARISONS:
        return ctx.add(getattr(s, f"ROperator_Comparison_float_{COMPARISONS[kind]}")(a, b, out), [a, b], [out],
                       shape, "bool")
    raise NotBuildable(f"elementwise {kind} has no SOFIE operator")


def _broadcast(*shapes):
    return None if any(s is None for s in shapes) else broadcast_shapes(shapes)


def _scalar(ctx, x, value):
    return ctx.const(np.float32(value), "scalar")


@composed("rsqrt")
def _rsqrt(ctx, op, x):
    return unary(ctx, "reciprocal", unary(ctx, "sqrt", x))


@composed("expm1")
def _expm1(ctx, op, x):
    return binary(ctx, "sub", unary(ctx, "exp", x), _scalar(ctx, x, 1.0))


@composed("log1p")
def _log1p(ctx, op, x):
    return unary(ctx, "log", binary(ctx, "add", x, _scalar(ctx, x, 1.0)))


@composed("square")
def _square(ctx, op, x):
    return binary(ctx, "mul", x, x)


@composed("integer_pow")
def _integer_pow(ctx, op, x):
    y = int(op.param)
    if y in (1, 2, 3):
        p = x
        for _ in range(y - 1):
            p = binary(ctx, "mul", p, x)
        return p
    if y == -1:
        return unary(ctx, "reciprocal", x)
    return binary(ctx, "pow", x, _scalar(ctx, x, float(y)))


@composed("erfc")
def _erfc(ctx, op, x):
    return binary(ctx, "sub", _scalar(ctx, x, 1.0), unary(ctx, "erf", x))


@composed("ne")
def _ne(ctx, op, x, y):
    eq = binary(ctx, "eq", x, y)
    out = ctx.fresh("ne")
    return ctx.add(ctx.sofie.ROperator_Not(eq, out), [eq], [out], ctx.shape(eq), "bool")


@composed("clamp")
def _clamp(ctx, op, lo, x, hi):
    """Clip when both bounds are literals (SOFIE's Clip takes numbers), else max then min."""
    a, _, c = op.args
    if isinstance(a, Scalar) and isinstance(c, Scalar):
        out = ctx.fresh("clip")
        return ctx.add(ctx.sofie.ROperator_Clip["float"](x, out, float(a.value), float(c.value)), [x], [out],
                       ctx.shape(x))
    return binary(ctx, "min", binary(ctx, "max", x, lo), hi)


@composed("select")
def _select(ctx, op, which, *cases):
    if len(cases) != 2 or ctx.dtype(which) != "bool":
        raise NotBuildable("a select on an integer index: SOFIE's Where takes a bool condition")
    out = ctx.fresh("where")
    shape = _broadcast(ctx.shape(which), ctx.shape(cases[0]), ctx.shape(cases[1]))
    return ctx.add(ctx.sofie.ROperator_Where["float"](which, cases[1], cases[0], out), [which, *cases], [out], shape)


@builds(Elementwise)
def _elementwise(ctx, op):
    out = ctx.g.tensors[op.outputs[0]]
    floats = [a.dtype if isinstance(a, Scalar) else ctx.g.tensors[a].dtype for a in op.args]
    if op.kind == "cast":
        return [_cast(ctx, op, out)]
    if op.kind == "select" and isinstance(op.args[0], Scalar):   # a choice known now (Keras' LayerNorm)
        chosen = op.args[1 + int(op.args[0].value)]
        if not isinstance(chosen, Scalar) and tuple(ctx.g.tensors[chosen].shape) == tuple(out.shape):
            return [ctx.value(chosen)]
    if any(d != "float32" for d in floats) and not (op.kind == "select" and floats[1:] == ["float32"] * 2):
        raise NotBuildable(f"{op.kind} on {', '.join(sorted(set(floats)))}: SOFIE's bound operators take float only")
    xs = [ctx.const(np.float32(a.value), "scalar") if isinstance(a, Scalar) else ctx.value(a) for a in op.args]
    k = op.kind
    if k in COMPOSED:
        v = COMPOSED[k](ctx, op, *xs)
    elif len(xs) == 1:
        v = unary(ctx, k, xs[0])
    elif len(xs) == 2:
        v = binary(ctx, k, *xs)
    else:
        raise NotBuildable(f"elementwise {k} has no SOFIE operator")
    if ctx.shape(v) is not None and ctx.shape(v) != (tuple(out.shape) or (1,)):   # a scalar is [1] in SOFIE
        raise NotBuildable(f"{k} broadcasts to {tuple(out.shape)} beyond its operands' shapes: SOFIE's Expand "
                           "takes static shapes")
    return [v]


def _cast(ctx, op, out):
    (x,) = op.args
    if isinstance(x, Scalar):
        return ctx.const(np.asarray(x.value, out.dtype), "scalar")
    v = ctx.value(x)
    src = ctx.g.tensors[x].dtype
    if src == out.dtype:
        return v
    if "float32" not in (src, out.dtype):
        raise NotBuildable(f"a cast from {src} to {out.dtype}: only casts from or to float32 are built")
    from .context import etype
    y = ctx.fresh("cast")
    return ctx.add(ctx.sofie.ROperator_Cast(etype(out.dtype), v, y), [v], [y], ctx.shape(v), out.dtype)
