"""Elementwise operators (SOFIE's BasicUnary/BasicBinary, Relu, Tanh, Sigmoid, Where, Cast).

One operator class covers every arity: a *kind* names the scalar function (each backend spells it:
cpp/ops/elementwise.py, onnx/elementwise.py), applied with NumPy broadcasting of size-1 and missing
leading dimensions. Keeping the scalar function apart from the loop is what lets a fusion pass merge
a chain of elementwise operators into one loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..tensor import numel
from .base import Op, Scalar
from ..rows import same_rows

# kind -> SOFIE-style operator name (the C++ form of each kind: cpp/ops/elementwise.py)
NAMES = {
    "neg": "Neg",
    "exp": "Exp",
    "exp2": "Exp2",
    "log": "Log",
    "log1p": "Log1p",
    "expm1": "Expm1",
    "sqrt": "Sqrt",
    "rsqrt": "Rsqrt",
    "cbrt": "Cbrt",
    "tanh": "Tanh",
    "logistic": "Sigmoid",
    "erf": "Erf",
    "erfc": "Erfc",
    "abs": "Abs",
    "sign": "Sign",
    "floor": "Floor",
    "ceil": "Ceil",
    "round_away": "Round",
    "round_even": "Round",
    "sin": "Sin",
    "cos": "Cos",
    "tan": "Tan",
    "atan": "Atan",
    "sinh": "Sinh",
    "cosh": "Cosh",
    "asinh": "Asinh",
    "acosh": "Acosh",
    "atanh": "Atanh",
    "asin": "Asin",
    "acos": "Acos",
    "square": "Square",
    "relu": "Relu",
    "is_finite": "IsFinite",
    "identity": "Identity",
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "pow": "Pow",
    "atan2": "Atan2",
    "max": "Max",
    "min": "Min",
    "eq": "Equal",
    "ne": "NotEqual",
    "lt": "Less",
    "le": "LessOrEqual",
    "gt": "Greater",
    "ge": "GreaterOrEqual",
    "clamp": "Clip",
}

# Kinds with a whole-vector form (a vector math function, not a libm call per element): alone they run
# as one call over the tensor, and they join a fused chain only if the whole chain runs as vectors.
VECTOR_KINDS = frozenset({"exp", "tanh", "logistic"})
EXTRA_NAMES = {"rem": "Mod", "and": "And", "or": "Or", "xor": "Xor", "not": "Not",
               "select": "Where", "cast": "Cast", "integer_pow": "Pow"}


def is_int(dtype) -> bool:
    return np.dtype(dtype).kind in "iu"


@dataclass(eq=False)
class Elementwise(Op):
    kind: str = ""
    args: tuple = ()          # tensor names (str) or Scalar, in operand order
    dtype: str = "float32"    # output dtype
    param: object = None      # integer_pow exponent, select arity...
    shape: tuple = None       # output shape; None: broadcast of the tensor operands

    elementwise = True   # reads each operand at the output's own index (cpp/memory.in_place_carries)

    @classmethod
    def make(cls, kind, args, dtype, param=None, shape=None):
        return cls([a for a in args if isinstance(a, str)], kind=kind, args=tuple(args),
                   dtype=np.dtype(dtype).name, param=param, shape=None if shape is None else tuple(shape))

    @property
    def op_type(self) -> str:
        return NAMES.get(self.kind) or EXTRA_NAMES.get(self.kind, self.kind)

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

    def flops(self, g) -> int:
        return numel(g.tensors[self.outputs[0]].shape)

    def describe(self) -> str:
        return self.kind if self.param is None else f"{self.kind}({self.param})"

    def rows(self, g) -> str:
        return same_rows(g, self, self.inputs)


@dataclass(eq=False)
class DimValue(Op):
    """The run-time value of a dimension as a scalar tensor (JAX's dim_as_value): the batch size,
    e.g. to normalise a mean over the batch or to wrap a negative index into it."""
    dim: object = 0
    dtype: str = "int32"

    reads_batch_size = True

    def infer(self, g):
        return [((), self.dtype)]

    def describe(self):
        return repr(self.dim)

    def rows(self, g) -> str:
        return "reads the batch size as a value"


@dataclass(eq=False)
class Iota(Op):
    """Indices along one dimension, computed at run time because the shape holds the batch
    (an iota of fixed size is folded into a constant at conversion time)."""
    shape: tuple = ()
    dimension: int = 0
    dtype: str = "int32"

    def infer(self, g):
        return [(tuple(self.shape), self.dtype)]

    def describe(self):
        return f"dimension={self.dimension}"

    def rows(self, g) -> str:
        return "" if self.dimension != 0 else "counts along the batch axis"
