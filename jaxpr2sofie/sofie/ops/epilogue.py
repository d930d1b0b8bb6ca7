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


# Inner loops shorter than this get "outer-loop vectorised" by g++ 12 (permutes across rows, 4x
# slower than scalar code): narrow blocks run as super-rows of several output rows instead.
MIN_SPAN = 32


def apply_stages(w, g, stages, v: str, channel, full: str, out_shape) -> None:
    """Lines updating float variable `v` through every stage. `channel(a)` is the C++ element of
    per-channel operand `a` that `v` needs, `full` the offset of `v`'s element in the output."""
    for s in stages:
        operands = []
        for a in s.args:
            if a is None:
                operands.append(v)
            elif isinstance(a, Scalar):
                operands.append(w.literal(a.value, a.dtype))
            else:
                kind = operand_kind(g, a, out_shape)
                operands.append(channel(a) if kind == "channel" else f"{w.ref(a)}[{'0' if kind == 'one' else full}]")
        w.line(f"{v} = {s.vector_template(g).format(*operands)};")


def emit_epilogue(w, g, stages, y: str, offset: str, rows, cout, out_shape) -> None:
    """Apply `stages` in place to the `rows` x `cout` block at `y`, which is the output tensor's
    element `offset` onward (full-shape operands are read at the same offset)."""
    if not stages:
        return
    reps = 1 if cout >= MIN_SPAN or not isinstance(rows, int) else min(rows, -(-MIN_SPAN // cout))
    span = reps * cout
    tiles = {}
    for a in dict.fromkeys(a for s in stages for a in s.inputs):
        if operand_kind(g, a, out_shape) == "channel" and reps > 1:   # the channel vector, repeated
            tiles[a] = w.fresh("tile")
            w.line(f"float {tiles[a]}[{span}];")
            with w.loops([span], stem="j") as (j,):
                w.line(f"{tiles[a]}[{j}] = {w.ref(a)}[{j} % {cout}];")
    done = rows // reps * reps if isinstance(rows, int) else rows
    parts = [(0, rows // reps if reps > 1 else rows, span)]
    if reps > 1 and rows % reps:
        parts.append((done * cout, 1, (rows % reps) * cout))
    for start, count, length in parts:
        with w.loops([count], stem="r") as (r,), w.loops([length], stem="c") as (c,):
            i = w.index([r, c], [span, 1], start)
            v = w.fresh("v")
            w.line(f"float {v} = {y}[{i}];")
            apply_stages(w, g, stages, v, lambda a: f"{tiles[a] if a in tiles else w.ref(a)}[{c}]",
                         i if offset == "0" else f"{offset} + {i}", out_shape)
            w.line(f"{y}[{i}] = {v};")
