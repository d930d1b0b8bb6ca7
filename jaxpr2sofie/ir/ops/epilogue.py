"""An operator's epilogue: elementwise stages (bias, activation, residual add) applied to its output
while a block of it is still in cache, instead of one more pass over memory per stage.

A stage is an `Elementwise` whose args hold `None` where the running value goes; its other operands
are Scalars or tensors that are either per-channel (one value per last-axis entry, or one value) or
the full output shape (a residual). The scalar C++ expression is the unfused operator's own
template, so fusing changes no result.
"""
from __future__ import annotations

from .base import Scalar
from .elementwise import Elementwise

# kinds a stage may have: float in, float out, cheap next to the product that feeds them
UNARY = frozenset({"relu", "neg", "abs", "tanh", "logistic", "exp", "erf", "identity", "square"})
BINARY = frozenset({"add", "sub", "mul", "div", "max", "min"})
CLAMP = "clamp"   # clamp(lo, x, hi): the running value is the middle operand


def operand_kind(g, name, out_shape):
    """How a tensor operand lines up with an output of `out_shape` (channels last): "one" value,
    one per "channel", the "full" shape, or None when it broadcasts some other way."""
    t = g.tensors[name]
    if t.dtype != "float32":
        return None
    if tuple(t.shape) == tuple(out_shape):
        return "full"
    if len(t.shape) > len(out_shape) or any(d != 1 for d in t.shape[:-1]):
        return None
    if t.size == 1:
        return "one"
    return "channel" if len(out_shape) and t.shape[-1] == out_shape[-1] else None


def as_stage(g, op, acc, out_shape):
    """`op` (an Elementwise reading tensor `acc`) as a stage, or None if it cannot be one."""
    if not isinstance(op, Elementwise) or op.dtype != "float32" or op.param is not None:
        return None
    if tuple(g.tensors[op.outputs[0]].shape) != tuple(out_shape) or list(op.args).count(acc) != 1:
        return None
    k = op.kind
    at = op.args.index(acc)
    if not (k in UNARY and len(op.args) == 1 or k in BINARY and len(op.args) == 2
            or k == CLAMP and len(op.args) == 3 and at == 1):
        return None
    for a in op.args:
        if a != acc and not (isinstance(a, Scalar) and a.dtype == "float32"
                             or isinstance(a, str) and operand_kind(g, a, out_shape)):
            return None
    return Elementwise.make(k, tuple(None if a == acc else a for a in op.args), "float32")


def describe(stages) -> str:
    return " + ".join(s.kind for s in stages)


