"""Elementwise operators (SOFIE's BasicUnary/BasicBinary, Relu, Tanh, Sigmoid, Where, Cast).

One operator class covers every arity: a *kind* names a scalar C++ expression template and
the operator writes the loop around it, broadcasting size-1 and missing leading dimensions.
Keeping the scalar expression separate from the loop is what lets a later fusion pass merge
a chain of elementwise operators into one loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..tensor import ctype, numel, strides_of
from ..vmath import KINDS as VECTOR_KINDS
from ..writer import Writer
from .base import Op, Scalar


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

# kind -> (template, SOFIE-style operator name). {0}.. are operands, {T} the output C++ type.
TEMPLATES = {
    "neg": ("-({0})", "Neg"),
    "exp": ("std::exp({0})", "Exp"),
    "exp2": ("std::exp2({0})", "Exp2"),
    # glibc's log reads a denormal's bits, past the denormals-are-zero mode; a comparison does not
    "log": ("std::log(({0}) == 0 ? ({T})0 : ({0}))", "Log"),
    "log1p": (_DENORMAL_TO_ZERO.format("std::log1p({0})"), "Log1p"),
    "expm1": ("(({0}) == 0 ? ({0}) : std::expm1({0}))", "Expm1"),
    "sqrt": ("std::sqrt({0})", "Sqrt"),
    "rsqrt": ("({T})1 / std::sqrt({0})", "Rsqrt"),
    "cbrt": ("std::cbrt({0})", "Cbrt"),
    "tanh": ("(({0}) == 0 ? ({0}) : " + _SATURATE.format("std::tanh({0})", XLA_TANH_ONE) + ")", "Tanh"),
    "logistic": ("({T})1 / (({T})1 + std::exp(-({0})))", "Sigmoid"),
    "erf": (_SATURATE.format("std::erf({0})", XLA_ERF_ONE), "Erf"),
    "erfc": ("std::erfc({0})", "Erfc"),
    "abs": ("std::abs({0})", "Abs"),
    "sign": ("(({0}) > 0 ? ({T})1 : (({0}) < 0 ? ({T})-1 : ({0})))", "Sign"),
    "floor": ("std::floor({0})", "Floor"),
    "ceil": ("std::ceil({0})", "Ceil"),
    "round_away": ("std::round({0})", "Round"),
    "round_even": ("std::nearbyint({0})", "Round"),
    "sin": ("std::sin({0})", "Sin"),
    "cos": ("std::cos({0})", "Cos"),
    "tan": ("std::tan({0})", "Tan"),
    "atan": ("std::atan({0})", "Atan"),
    "sinh": (_DENORMAL_TO_ZERO.format("std::sinh({0})"), "Sinh"),
    "cosh": ("std::cosh({0})", "Cosh"),
    "asinh": (_DENORMAL_TO_ZERO.format("std::asinh({0})"), "Asinh"),
    "acosh": ("std::acosh({0})", "Acosh"),
    "atanh": ("std::atanh({0})", "Atanh"),
    "asin": ("std::asin({0})", "Asin"),
    "acos": ("std::acos({0})", "Acos"),
    "square": ("({0}) * ({0})", "Square"),
    "relu": ("(({0}) > 0 || ({0}) != ({0})) ? ({0}) : ({T})0", "Relu"),
    "is_finite": ("std::isfinite({0})", "IsFinite"),
    "identity": ("{0}", "Identity"),
    "add": ("({0}) + ({1})", "Add"),
    "sub": ("({0}) - ({1})", "Sub"),
    "mul": ("({0}) * ({1})", "Mul"),
    "div": ("({0}) / ({1})", "Div"),
    "pow": ("std::pow({0}, {1})", "Pow"),
    "atan2": ("std::atan2({0}, {1})", "Atan2"),
    "max": (_FLOAT_MAX, "Max"),
    "min": (_FLOAT_MIN, "Min"),
    "eq": ("({0}) == ({1})", "Equal"),
    "ne": ("({0}) != ({1})", "NotEqual"),
    "lt": ("({0}) < ({1})", "Less"),
    "le": ("({0}) <= ({1})", "LessOrEqual"),
    "gt": ("({0}) > ({1})", "Greater"),
    "ge": ("({0}) >= ({1})", "GreaterOrEqual"),
    "clamp": ("(({1}) < ({0}) ? ({0}) : (({1}) > ({2}) ? ({2}) : ({1})))", "Clip"),
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
EXTRA_NAMES = {"rem": "Mod", "and": "And", "or": "Or", "xor": "Xor", "not": "Not",
               "select": "Where", "cast": "Cast", "integer_pow": "Pow"}


def _is_int(dtype) -> bool:
    return np.dtype(dtype).kind in "iu"


@dataclass(eq=False)
class Elementwise(Op):
    kind: str = ""
    args: tuple = ()          # tensor names (str) or Scalar, in operand order
    dtype: str = "float32"    # output dtype
    param: object = None      # integer_pow exponent, select arity...
    shape: tuple = None       # output shape; None: broadcast of the tensor operands

    elementwise = True   # reads each operand at the output's own index (graph.in_place_carries)

    @classmethod
    def make(cls, kind, args, dtype, param=None, shape=None):
        return cls([a for a in args if isinstance(a, str)], kind=kind, args=tuple(args),
                   dtype=np.dtype(dtype).name, param=param, shape=None if shape is None else tuple(shape))

    @property
    def op_type(self) -> str:
        return TEMPLATES.get(self.kind, (None, EXTRA_NAMES.get(self.kind, self.kind)))[1]

    def infer(self, g):
        ranks = [len(g.tensors[a].shape) for a in self.inputs]
        rank = max(ranks, default=0)
        out = [1] * rank
        for a in self.inputs:
            s = g.tensors[a].shape
            for k, d in enumerate(s, start=rank - len(s)):
                if d != 1:
                    if out[k] not in (1, d):
                        raise ValueError(f"{self.kind}: shapes {[g.tensors[x].shape for x in self.inputs]} do not broadcast")
                    out[k] = d
        if self.shape is not None:
            if len(self.shape) < rank or any(o != 1 and o != s for o, s in zip(out[::-1], self.shape[::-1])):
                raise ValueError(f"{self.kind}: operands {out} do not broadcast to {self.shape}")
            out = self.shape
        return [(tuple(out), self.dtype)]

    def template(self, g) -> str:
        in_dtype = g.tensors[self.inputs[0]].dtype if self.inputs else self.dtype
        k = self.kind
        if k == "integer_pow":
            y = int(self.param)
            prod = " * ".join(["({0})"] * abs(y)) or "({T})1"
            return prod if y >= 0 else f"({{T}})1 / ({prod})"
        if k == "select":   # select_n(which, case0, case1, ...)
            n = int(self.param)
            expr = "{%d}" % n
            for c in range(n - 2, -1, -1):
                cond = "!({0})" if in_dtype == "bool" else f"({{0}}) == {c}"
                expr = f"({cond} ? ({{{c + 1}}}) : ({expr}))"
            return expr
        if k == "cast":
            if self.dtype == "bool":
                return "(({0}) != 0)"
            return "static_cast<{T}>({0})"
        if in_dtype == "bool" and k in BOOL_TEMPLATES:
            return BOOL_TEMPLATES[k]
        if _is_int(in_dtype) and k in INT_TEMPLATES:
            return INT_TEMPLATES[k]
        if k == "rem":
            return FLOAT_ONLY_REM
        return TEMPLATES[k][0]

    def literal_bound(self):
        """For float32 max/min against one non-NaN literal: (operand slot, comparison, literal slot)
        such that `operand <cmp> literal` picks the literal, with XLA's result: NaN passes through,
        and max(-0, +0) is +0, min(+0, -0) is -0. None for anything else."""
        args = self.args
        lit = [a for a in args if isinstance(a, Scalar)]
        if not (self.dtype == "float32" and self.kind in ("max", "min") and len(args) == 2 and len(lit) == 1
                and not math.isnan(float(lit[0].value))):
            return None
        at = args.index(lit[0])
        neg = math.copysign(1.0, float(lit[0].value)) < 0
        zero = float(lit[0].value) == 0.0
        if self.kind == "max":
            edge = "<=" if zero and not neg else "<"
        else:
            edge = ">=" if zero and neg else ">"
        return "{%d}" % (1 - at), edge, "{%d}" % at

    def vector_template(self, g) -> str:
        """The C++ template with {T} filled in; for float32 relu and max/min against a literal, in a
        form g++ vectorises (the generic NaN- and signed-zero-exact templates keep it from doing
        so), with the same result. Epilogues and fused loops use it."""
        if self.dtype == "float32" and self.kind == "relu":
            return "(({0}) <= 0.f) ? 0.f : ({0})"
        bound = self.literal_bound()
        if bound:
            acc, edge, s = bound
            return f"(({acc}) {edge} ({s})) ? ({s}) : ({acc})"
        return self.template(g).replace("{T}", ctype(self.dtype))

    def emit(self, w: Writer, g) -> None:
        out = g.tensors[self.outputs[0]]
        shape = out.shape
        n = numel(shape)
        flat = all(g.tensors[a].shape == shape for a in self.inputs)
        tmpl = self.template(g).replace("{T}", ctype(self.dtype))
        w.comment(self.op_type + (f" ({self.origin})" if self.origin else ""))
        if flat and self.kind in VECTOR_KINDS and self.dtype == "float32" and self.args == tuple(self.inputs):
            w.need("vmath")   # whole vectors, no libm call: see vmath.py
            w.line(f"detail::{VECTOR_KINDS[self.kind]}({w.ref(self.inputs[0])}, {w.ref(out.name)}, {n});")
            return
        if flat:
            with w.loops([n]) as (i,):
                operands = [self._operand(w, g, a, [i], None) for a in self.args]
                w.line(f"{w.ref(out.name)}[{i}] = {tmpl.format(*operands)};")
            return
        with w.loops(shape) as idx:
            operands = [self._operand(w, g, a, idx, shape) for a in self.args]
            w.line(f"{w.ref(out.name)}[{w.index(idx, strides_of(shape))}] = {tmpl.format(*operands)};")

    @staticmethod
    def _operand(w, g, a, idx, shape) -> str:
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

    def flops(self, g) -> int:
        return numel(g.tensors[self.outputs[0]].shape)

    def describe(self) -> str:
        return self.kind if self.param is None else f"{self.kind}({self.param})"


@dataclass(eq=False)
class DimValue(Op):
    """The run-time value of a dimension as a scalar tensor (JAX's dim_as_value): the batch size,
    e.g. to normalise a mean over the batch or to wrap a negative index into it."""
    dim: object = 0
    dtype: str = "int32"

    def infer(self, g):
        return [((), self.dtype)]

    def emit(self, w, g):
        w.line(f"{w.ref(self.outputs[0])}[0] = static_cast<{ctype(self.dtype)}>({self.dim});")

    def describe(self):
        return repr(self.dim)


@dataclass(eq=False)
class Iota(Op):
    """Indices along one dimension, computed at run time because the shape holds the batch
    (an iota of fixed size is folded into a constant at conversion time)."""
    shape: tuple = ()
    dimension: int = 0
    dtype: str = "int32"

    def infer(self, g):
        return [(tuple(self.shape), self.dtype)]

    def emit(self, w, g):
        w.comment(f"Iota along dimension {self.dimension}")
        with w.loops(self.shape) as idx:
            w.line(f"{w.ref(self.outputs[0])}[{w.index(idx, strides_of(self.shape))}] = "
                   f"static_cast<{ctype(self.dtype)}>({idx[self.dimension]});")

    def describe(self):
        return f"dimension={self.dimension}"
