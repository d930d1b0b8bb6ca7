"""Reductions: ReduceSum/Max/Min/Prod, ArgMax/ArgMin, CumSum (and cumulative products/extrema,
which ONNX lacks, unrolled along their axis), Softmax."""
from __future__ import annotations

import numpy as np

from ..ir.ops.reduce import ArgReduce, Cumulative, Reduce, Softmax
from ..ir.tensor import numel
from .builder import NotExportable, exports, symbolic

MAX_UNROLL = 256   # longest axis a cumulative product/max/min is unrolled along

_REDUCE = {"sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin", "prod": "ReduceProd"}
_COMBINE = {"prod": "Mul", "max": "Max", "min": "Min"}


def _identity(kind, dtype):
    """What a reduction over no element gives (as the C++ initialises its accumulator)."""
    if kind in ("sum", "prod"):
        return int(kind == "prod")
    if np.dtype(dtype).kind == "f":
        return -np.inf if kind == "max" else np.inf
    if np.dtype(dtype).kind == "b":
        return kind == "min"
    info = np.iinfo(dtype)
    return info.min if kind == "max" else info.max


@exports(Reduce)
def _reduce(b, op):
    t = b.g.tensors[op.inputs[0]]
    if any(t.shape[k] == 0 for k in op.axes):   # nothing to reduce: the reduction's identity
        out = b.g.tensors[op.outputs[0]]
        if any(symbolic(d) for d in out.shape):
            raise NotExportable(f"a reduction over a zero-size axis into the symbolic shape {tuple(out.shape)}")
        return [b.expand(b.scalar(_identity(op.kind, t.dtype), t.dtype), out.shape)]
    if op.kind in ("max", "min") and t.dtype == "float32" and len(op.axes) <= 3:
        return [_max_as_pool(b, op, t)]
    x = b.value(t.name)
    if t.dtype == "bool":   # ONNX reductions take no bool before opset 20: any/all as max/min over 0/1
        return [b.cast(b.reduce(_REDUCE[op.kind], b.cast(x, "int32"), list(op.axes)), "bool")]
    y = b.reduce(_REDUCE[op.kind], x, list(op.axes))
    count = numel(t.shape[k] for k in op.axes)
    if op.kind == "sum" and t.dtype == "float32" and not symbolic(count):   # jnp.mean: a sum and a division
        b.sums[y] = (count, lambda: b.reduce("ReduceMean", x, list(op.axes)))
    return [y]


def _max_as_pool(b, op, t):
    """A float max/min over up to three axes as one MaxPool whose window covers them: SOFIE's parser
    has no ReduceMax, and max over particles/pixels is the usual aggregation of HEP networks."""
    kept = [k for k in range(len(t.shape)) if k not in op.axes]
    window = [t.shape[k] for k in op.axes]
    channels = numel(t.shape[k] for k in kept)   # may hold the run-time batch: Reshape's one -1
    v = b.view(t.name, perm=tuple(kept + list(op.axes)))
    v = b.reshape(v, [1, channels] + window)
    if op.kind == "min":
        v = b.ew("Neg", v)
    y = b.node("MaxPool", [v], hint="reduce_" + op.kind, shape=[1, channels] + [1] * len(window),
               dtype=t.dtype, kernel_shape=window)
    if op.kind == "min":
        y = b.ew("Neg", y)
    return b.reshape(y, b.g.tensors[op.outputs[0]].shape)


@exports(ArgReduce)
def _arg_reduce(b, op):
    """TopK with k=1 (in SOFIE's list, unlike ArgMax): ONNX puts the lower index first on ties,
    as JAX's argmax does."""
    t = b.g.tensors[op.inputs[0]]
    out = b.g.tensors[op.outputs[0]]
    kept = tuple(1 if k == op.axis else n for k, n in enumerate(t.shape))
    _, i = b.node("TopK", [b.value(t.name), b.ints([1])], hint="arg" + op.kind, n_out=2, shape=kept,
                  dtype=t.dtype, axis=op.axis, largest=int(op.kind == "max"), sorted=1)
    b.meta[i] = (kept, "int64")
    return [b.cast(b.reshape(i, out.shape), op.index_dtype)]


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
