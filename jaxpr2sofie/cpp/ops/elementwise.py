"""Elementwise operators in C++: a scalar expression template per kind, the loop around it
broadcasting size-1 and missing leading dimensions; whole vectors through vmath where it has the kind."""
from __future__ import annotations

from ...ir.ops.elementwise import DimValue, Elementwise, Iota, Scalar, is_int
from ...ir.tensor import ctype, numel, strides_of
from ..rules import emits
from ..vmath import KINDS as VMATH_FUNCTIONS
from ..writer import Writer


# NaN-propagating, and +0 > -0, as XLA's maximum/minimum
_FLOAT_MAX = "(({0}) != ({0}) || ({0}) > ({1}) || (({0}) == ({1}) && !std::signbit({0}))) ? ({0}) : ({1})"
_FLOAT_MIN = "(({0}) != ({0}) || ({0}) < ({1}) || (({0}) == ({1}) && std::signbit({0}))) ? ({0}) : ({1})"


# Where XLA's CPU code gives a discrete result that a correctly rounded function does not, the
# generated code gives XLA's: an argmax over saturated activations, or a comparison with 1, must
# pick what JAX picks. XLA's tanh is exactly +-1 from |x| = 7.99881172 on (a correctly rounded one
# only from about 9.01), its erf from |x| = 3.8325066 on (measured with jaxlib 0.10.2 on x86-64;
# between 3.6467 and 3.8325 XLA's erf alternates between 1 and 0.9999999, and ours stays below 1).
XLA_TANH_ONE = "7.99881172f"
XLA_ERF_ONE = "3.8325066f"
_SATURATE = "(std::abs({{0}}) >= {1} ? std::copysign(({{T}})1, {{0}}) : {0})"
# glibc returns a tiny argument of log1p, sinh and asinh unchanged, past the flush-to-zero mode that
# XLA computes in (see detail::FlushDenormals): a denormal argument gives +-0 there. (expm1 and tanh
# are the other way round: XLA returns a denormal argument itself.)
_DENORMAL_TO_ZERO = "(({{0}}) == 0 ? ({{0}}) * ({{T}})0 : {0})"

# kind -> C++ expression template: {0}.. are operands, {T} the output C++ type.
TEMPLATES = {
    "neg": "-({0})",
    "exp": "std::exp({0})",
    "exp2": "std::exp2({0})",
    # glibc's log reads a denormal's bits, past the denormals-are-zero mode; a comparison does not
    "log": "std::log(({0}) == 0 ? ({T})0 : ({0}))",
    "log1p": _DENORMAL_TO_ZERO.format("std::log1p({0})"),
    "expm1": "(({0}) == 0 ? ({0}) : std::expm1({0}))",
    "sqrt": "std::sqrt({0})",
    "rsqrt": "({T})1 / std::sqrt({0})",
    "cbrt": "std::cbrt({0})",
    "tanh": "(({0}) == 0 ? ({0}) : " + _SATURATE.format("std::tanh({0})", XLA_TANH_ONE) + ")",
    "logistic": "({T})1 / (({T})1 + std::exp(-({0})))",
    "erf": _SATURATE.format("std::erf({0})", XLA_ERF_ONE),
    "erfc": "std::erfc({0})",
    "abs": "std::abs({0})",
    "sign": "(({0}) > 0 ? ({T})1 : (({0}) < 0 ? ({T})-1 : ({0})))",
    "floor": "std::floor({0})",
    "ceil": "std::ceil({0})",
    "round_away": "std::round({0})",
    "round_even": "std::nearbyint({0})",
    "sin": "std::sin({0})",
    "cos": "std::cos({0})",
    "tan": "std::tan({0})",
    "atan": "std::atan({0})",
    "sinh": _DENORMAL_TO_ZERO.format("std::sinh({0})"),
    "cosh": "std::cosh({0})",
    "asinh": _DENORMAL_TO_ZERO.format("std::asinh({0})"),
    "acosh": "std::acosh({0})",
    "atanh": "std::atanh({0})",
    "asin": "std::asin({0})",
    "acos": "std::acos({0})",
    "square": "({0}) * ({0})",
    "relu": "(({0}) > 0 || ({0}) != ({0})) ? ({0}) : ({T})0",
    "is_finite": "std::isfinite({0})",
    "identity": "{0}",
    "add": "({0}) + ({1})",
    "sub": "({0}) - ({1})",
    "mul": "({0}) * ({1})",
    "div": "({0}) / ({1})",
    "pow": "std::pow({0}, {1})",
    "atan2": "std::atan2({0}, {1})",
    "max": _FLOAT_MAX,
    "min": _FLOAT_MIN,
    "eq": "({0}) == ({1})",
    "ne": "({0}) != ({1})",
    "lt": "({0}) < ({1})",
    "le": "({0}) <= ({1})",
    "gt": "({0}) > ({1})",
    "ge": "({0}) >= ({1})",
    "clamp": "(({1}) < ({0}) ? ({0}) : (({1}) > ({2}) ? ({2}) : ({1})))",
}


# Integer and boolean variants where the float template is wrong.
INT_TEMPLATES = {
    "max": "(({0}) > ({1})) ? ({0}) : ({1})",
    "min": "(({0}) < ({1})) ? ({0}) : ({1})",
    "rem": "({0}) % ({1})",
    "abs": "(({0}) < 0 ? -({0}) : ({0}))",
    "and": "({0}) & ({1})",
    "or": "({0}) | ({1})",
    "xor": "({0}) ^ ({1})",
    "not": "~({0})",
}


BOOL_TEMPLATES = {"and": "({0}) && ({1})", "or": "({0}) || ({1})", "xor": "({0}) != ({1})", "not": "!({0})"}


FLOAT_ONLY_REM = "std::fmod({0}, {1})"


def template(op, g) -> str:
    in_dtype = g.tensors[op.inputs[0]].dtype if op.inputs else op.dtype
    k = op.kind
    if k == "integer_pow":
        y = int(op.param)
        prod = " * ".join(["({0})"] * abs(y)) or "({T})1"
        return prod if y >= 0 else f"({{T}})1 / ({prod})"
    if k == "select":   # select_n(which, case0, case1, ...)
        n = int(op.param)
        expr = "{%d}" % n
        for c in range(n - 2, -1, -1):
            cond = "!({0})" if in_dtype == "bool" else f"({{0}}) == {c}"
            expr = f"({cond} ? ({{{c + 1}}}) : ({expr}))"
        return expr
    if k == "cast":
        if op.dtype == "bool":
            return "(({0}) != 0)"
        return "static_cast<{T}>({0})"
    if in_dtype == "bool" and k in BOOL_TEMPLATES:
        return BOOL_TEMPLATES[k]
    if is_int(in_dtype) and k in INT_TEMPLATES:
        return INT_TEMPLATES[k]
    if k == "rem":
        return FLOAT_ONLY_REM
    return TEMPLATES[k]


def vector_template(op, g) -> str:
    """The C++ template with {T} filled in; for float32 relu and max/min against a literal, in a
    form g++ vectorises (the generic NaN- and signed-zero-exact templates keep it from doing
    so), with the same result. Epilogues and fused loops use it."""
    if op.dtype == "float32" and op.kind == "relu":
        return "(({0}) <= 0.f) ? 0.f : ({0})"
    bound = op.literal_bound()
    if bound:
        acc, edge, s = bound
        return f"(({acc}) {edge} ({s})) ? ({s}) : ({acc})"
    return template(op, g).replace("{T}", ctype(op.dtype))


@emits(Elementwise)
def _elementwise(op, w: Writer, g) -> None:
    out = g.tensors[op.outputs[0]]
    shape = out.shape
    n = numel(shape)
    flat = all(g.tensors[a].shape == shape for a in op.inputs)
    tmpl = template(op, g).replace("{T}", ctype(op.dtype))
    w.comment(op.op_type)
    if flat and op.kind in VMATH_FUNCTIONS and op.dtype == "float32" and op.args == tuple(op.inputs):
        w.need("vmath")   # whole vectors, no libm call: see vmath.py
        w.line(f"detail::{VMATH_FUNCTIONS[op.kind]}({w.ref(op.inputs[0])}, {w.ref(out.name)}, {n});")
        return
    if flat:
        with w.loops([n], independent=True) as (i,):
            operands = [operand(w, g, a, [i], None) for a in op.args]
            w.line(f"{w.ref(out.name)}[{i}] = {tmpl.format(*operands)};")
        return
    with w.loops(shape, independent=True) as idx:
        operands = [operand(w, g, a, idx, shape) for a in op.args]
        w.line(f"{w.ref(out.name)}[{w.index(idx, strides_of(shape))}] = {tmpl.format(*operands)};")


def operand(w, g, a, idx, shape) -> str:
    if isinstance(a, Scalar):
        return w.literal(a.value, a.dtype)
    t = g.tensors[a]
    if shape is None:
        return f"{w.ref(a)}[{idx[0]}]"
    s = t.shape
    st = strides_of(s)
    lead = len(shape) - len(s)
    strides = [0] * lead + [0 if d == 1 else st[k] for k, d in enumerate(s)]
    return f"{w.ref(a)}[{w.index(idx, strides)}]"


@emits(DimValue)
def _dimvalue(op, w, g):
    w.line(f"{w.ref(op.outputs[0])}[0] = static_cast<{ctype(op.dtype)}>({op.dim});")


@emits(Iota)
def _iota(op, w, g):
    w.comment(f"Iota along dimension {op.dimension}")
    with w.loops(op.shape) as idx:
        w.line(f"{w.ref(op.outputs[0])}[{w.index(idx, strides_of(op.shape))}] = "
               f"static_cast<{ctype(op.dtype)}>({idx[op.dimension]});")
