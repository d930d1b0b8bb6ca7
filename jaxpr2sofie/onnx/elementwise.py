"""Elementwise operators: one ONNX node where ONNX has the function, a short composition of
SOFIE-readable nodes where it does not (expm1 = Exp - 1, rsqrt = Reciprocal(Sqrt), ...)."""
from __future__ import annotations

import math

from ..ir.ops.elementwise import Elementwise, Scalar
from .builder import NotExportable, exports

UNARY = {
    "neg": "Neg", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "tanh": "Tanh", "logistic": "Sigmoid",
    "erf": "Erf", "abs": "Abs", "sign": "Sign", "floor": "Floor", "ceil": "Ceil", "sin": "Sin", "cos": "Cos",
    "tan": "Tan", "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "asinh": "Asinh", "acosh": "Acosh",
    "atanh": "Atanh", "asin": "Asin", "acos": "Acos", "relu": "Relu", "round_even": "Round",
    "identity": "Identity",
}
BINARY = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "max": "Max", "min": "Min",
    "eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual",
}
LOGICAL = {"and": ("And", "BitwiseAnd"), "or": ("Or", "BitwiseOr"), "xor": ("Xor", "BitwiseXor"),
           "not": ("Not", "BitwiseNot")}

COMPOSED = {}


def composed(kind):
    def register(fn):
        COMPOSED[kind] = fn
        return fn
    return register


def _one(b, x, value=1):
    return b.scalar(value, b.dtype(x))


@composed("exp2")
def _exp2(b, op, x):
    return b.ew("Pow", _one(b, x, 2), x)


@composed("log1p")
def _log1p(b, op, x):
    return b.ew("Log", b.ew("Add", x, _one(b, x)))


@composed("expm1")
def _expm1(b, op, x):
    return b.ew("Sub", b.ew("Exp", x), _one(b, x))


@composed("rsqrt")
def _rsqrt(b, op, x):
    return b.ew("Reciprocal", b.ew("Sqrt", x))


@composed("cbrt")
def _cbrt(b, op, x):
    return b.ew("Mul", b.ew("Sign", x), b.ew("Pow", b.ew("Abs", x), _one(b, x, 1.0 / 3.0)))


@composed("erfc")
def _erfc(b, op, x):
    return b.ew("Sub", _one(b, x), b.ew("Erf", x))


@composed("square")
def _square(b, op, x):
    return b.ew("Mul", x, x)


@composed("round_away")
def _round_away(b, op, x):
    return b.ew("Mul", b.ew("Sign", x), b.ew("Floor", b.ew("Add", b.ew("Abs", x), _one(b, x, 0.5))))


@composed("is_finite")
def _is_finite(b, op, x):
    bad = b.ew("Or", b.ew("IsInf", x, dtype="bool"), b.ew("IsNaN", x, dtype="bool"))
    return b.ew("Not", bad)


def _not(b, x):
    out = b.ew("Not", x)
    b.negations[out] = x
    return out


@composed("ne")
def _ne(b, op, x, y):
    return _not(b, b.ew("Equal", x, y, dtype="bool"))


@composed("rem")
def _rem(b, op, x, y):
    # fmod=1: the sign follows the dividend, as C's % and std::fmod (and lax.rem) do
    return b.ew("Mod", x, y, fmod=1)


@composed("atan2")
def _atan2(b, op, y, x):
    """Atan(y / x) moved into the right quadrant; ONNX has no two-argument arctangent."""
    zero, pi = _one(b, x, 0), _one(b, x, math.pi)
    base = b.ew("Atan", b.ew("Div", y, x))
    up = b.ew("GreaterOrEqual", y, zero, dtype="bool")
    left = b.ew("Where", up, b.ew("Add", base, pi), b.ew("Sub", base, pi))
    half = b.ew("Mul", b.ew("Sign", y), _one(b, x, math.pi / 2))
    on_axis = b.ew("Where", b.ew("Equal", x, zero, dtype="bool"), half, left)
    return b.ew("Where", b.ew("Greater", x, zero, dtype="bool"), base, on_axis)


@composed("clamp")
def _clamp(b, op, lo, x, hi):
    return b.ew("Min", b.ew("Max", x, lo), hi)


@composed("integer_pow")
def _integer_pow(b, op, x):
    y = int(op.param)
    if y == 0:
        return b.expand(_one(b, x), b.shape(x))
    p = x if abs(y) == 1 else b.ew("Mul", x, x) if abs(y) == 2 else b.ew("Pow", x, _one(b, x, abs(y)))
    return b.ew("Div", _one(b, x), p) if y < 0 else p


@composed("select")
def _select(b, op, which, *cases):
    if b.dtype(which) == "bool":
        if which in b.negations:   # where(x != x, ...) in jnp.logaddexp: SOFIE reads no Not
            return b.ew("Where", b.negations[which], cases[0], cases[1], dtype=b.dtype(cases[0]))
        return b.ew("Where", which, cases[1], cases[0], dtype=b.dtype(cases[0]))
    out = cases[-1]
    for c in range(len(cases) - 2, -1, -1):
        hit = b.ew("Equal", which, b.scalar(c, b.dtype(which)), dtype="bool")
        out = b.ew("Where", hit, cases[c], out, dtype=b.dtype(cases[0]))
    return out


@composed("cast")
def _cast(b, op, x):
    return b.cast(x, op.dtype)


def _logical(b, op, *xs):
    boolean, bitwise = LOGICAL[op.kind]
    if b.dtype(xs[0]) == "bool":
        return _not(b, xs[0]) if op.kind == "not" else b.ew(boolean, *xs)
    if b.opset < 18:
        raise NotExportable(f"bitwise {op.kind} on {b.dtype(xs[0])} needs ONNX opset 18 or later")
    return b.ew(bitwise, *xs)


def _before_transpose(b, op, out):
    """When every run-time operand is the same Transpose (NCHW -> NHWC after a Conv) and the rest
    are weights or scalars, the operands before it and that permutation: the operator is applied
    in the source layout and transposed after, so Conv -> bias -> Relu -> Conv chains keep NCHW
    and the transposes between them cancel. None otherwise."""
    perm, moved = None, []
    for a in op.args:
        if isinstance(a, Scalar):
            moved.append(b.scalar(a.value, a.dtype))
            continue
        v = b.value(a) if b.g.tensors[a].data is None else None
        if v is None:
            moved.append(a)          # a weight: permuted below, once the permutation is known
            continue
        if v not in b._transposed or b.shape(v) != tuple(out.shape):
            return None
        src, p = b._transposed[v]
        if perm not in (None, p):
            return None
        perm = p
        moved.append(src)
    if perm is None:
        return None
    inverse = tuple(perm.index(k) for k in range(len(perm)))
    for k, a in enumerate(op.args):
        if isinstance(a, str) and b.g.tensors[a].data is not None:
            shape = b.g.tensors[a].shape
            if len(shape) > len(perm):
                return None
            moved[k] = b.view(a, (1,) * (len(perm) - len(shape)) + tuple(shape), perm=inverse)
    return moved, perm


def _apply(b, op, xs, out):
    k = op.kind
    if k in UNARY:
        return b.ew(UNARY[k], *xs)
    if k in BINARY:
        return b.ew(BINARY[k], *xs, dtype=out.dtype)
    if k in LOGICAL:
        return _logical(b, op, *xs)
    if k in COMPOSED:
        return COMPOSED[k](b, op, *xs)
    raise NotExportable(f"elementwise kind {k!r} has no ONNX form")


def _conv_bias(b, op):
    """conv(x) + per-channel bias becomes the Conv node's own bias input (SOFIE's Conv fuses it)."""
    if op.kind != "add" or len(op.inputs) != 2 or any(isinstance(a, Scalar) for a in op.args):
        return None
    tensors = [b.g.tensors[a] for a in op.args]
    run = [t for t in tensors if t.data is None]
    weights = [t for t in tensors if t.data is not None]
    if len(run) != 1 or len(weights) != 1 or b.uses.get(run[0].name) != 1:
        return None
    v = b.value(run[0].name)
    if v not in b._transposed:
        return None
    src, perm = b._transposed[v]
    conv, w = b.biasable.get(src), weights[0]
    channels = b.shape(src)[1]
    if conv is None or w.size != channels or w.shape[-1] != channels or b.shape(v) != tuple(run[0].shape):
        return None
    conv.input.append(b.view(w.name, (channels,)))
    del b.biasable[src]
    return b.transpose(src, perm)


@exports(Elementwise)
def _elementwise(b, op):
    out = b.g.tensors[op.outputs[0]]
    fused = _conv_bias(b, op)
    if fused is not None:
        return [fused]
    moved = _before_transpose(b, op, out)
    if moved is not None:
        xs, perm = moved
        v = _apply(b, op, xs, out)
        v = b.cast(v, out.dtype) if b.dtype(v) not in (None, out.dtype) else v
        return [b.transpose(v, perm)]
    xs = [b.scalar(a.value, a.dtype) if isinstance(a, Scalar) else b.value(a) for a in op.args]
    mean = _as_mean(b, op, xs)
    if mean is not None:
        return [b.expand(mean, out.shape)]
    v = _apply(b, op, xs, out)
    v = b.cast(v, out.dtype) if b.dtype(v) not in (None, out.dtype) else v
    return [b.expand(v, out.shape)]


def _as_mean(b, op, xs):
    """sum / n, where the sum's rule knows a mean operator for it (AveragePool, ReduceMean)."""
    if op.kind != "div" or not isinstance(op.args[1], Scalar) or xs[0] not in b.sums:
        return None
    n, make = b.sums[xs[0]]
    return make() if float(op.args[1].value) == float(n) else None


def _check_tables():
    """Every kind the IR's Elementwise knows has an ONNX form (caught at import, not in a user's model)."""
    from ..ir.ops.elementwise import EXTRA_NAMES, NAMES
    known = set(UNARY) | set(BINARY) | set(LOGICAL) | set(COMPOSED)
    missing = (set(NAMES) | set(EXTRA_NAMES)) - known
    if missing:
        raise RuntimeError(f"elementwise kinds without an ONNX rule: {sorted(missing)}")


_check_tables()
