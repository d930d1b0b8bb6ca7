"""Reductions: ReduceSum/Max/Min/Prod, ArgMax/ArgMin, CumSum (and cumulative products/extrema,
which ONNX lacks, unrolled along their axis), Softmax."""
from __future__ import annotations

from ..ops.reduce import ArgReduce, Cumulative, Reduce, Softmax
from .builder import NotExportable, exports

MAX_UNROLL = 256   # longest axis a cumulative product/max/min is unrolled along

_REDUCE = {"sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin", "prod": "ReduceProd"}
_COMBINE = {"prod": "Mul", "max": "Max", "min": "Min"}


@exports(Reduce)
def _reduce(b, op):
    return [b.reduce(_REDUCE[op.kind], b.value(op.inputs[0]), list(op.axes))]


@exports(ArgReduce)
def _arg_reduce(b, op):
    x = b.value(op.inputs[0])
    out = b.g.tensors[op.outputs[0]]
    i = b.node("ArgMax" if op.kind == "max" else "ArgMin", [x], hint="arg" + op.kind, shape=out.shape,
               dtype="int64", axis=op.axis, keepdims=0)
    return [b.cast(i, op.index_dtype)]


@exports(Cumulative)
def _cumulative(b, op):
    t = b.g.tensors[op.inputs[0]]
    x = b.value(t.name)
    if op.kind == "sum":
        return [b.node("CumSum", [x, b.scalar(op.axis, "int64")], hint="cumsum",
                       shape=t.shape, dtype=t.dtype, reverse=int(op.reverse))]
    n = t.shape[op.axis]
    if n > MAX_UNROLL:
        raise NotExportable(f"cumulative {op.kind} along an axis of {n} (ONNX has only CumSum; "
                            f"at most {MAX_UNROLL} steps are unrolled)")
    order = range(n - 1, -1, -1) if op.reverse else range(n)
    steps, acc = {}, None
    for k in order:
        v = b.slice(x, {op.axis: (k, k + 1, 1)})
        acc = v if acc is None else b.ew(_COMBINE[op.kind], acc, v)
        steps[k] = acc
    parts = [steps[k] for k in range(n)]
    if len(parts) == 1:
        return parts
    return [b.node("Concat", parts, hint=f"cum{op.kind}", shape=t.shape, dtype=t.dtype, axis=op.axis)]


@exports(Softmax)
def _softmax(b, op):
    t = b.g.tensors[op.inputs[0]]
    return [b.node("Softmax", [b.value(t.name)], hint="softmax", shape=t.shape, dtype=t.dtype, axis=op.axis)]
