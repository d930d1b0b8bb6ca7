"""DynamicSlice / DynamicUpdateSlice: run-time start indices, clamped as XLA does
(start = clamp(start, 0, dim - size)), as a Slice / a ScatterND over the update's positions."""
from __future__ import annotations

import numpy as np

from ..ir.ops.gather import DynamicSlice, DynamicUpdateSlice
from .builder import exports


def _starts(b, op, sizes, shape):
    """The clamped start indices, one int64 vector of the operand's rank."""
    parts = []
    for s in op.starts:
        if isinstance(s, (int, np.integer)):
            parts.append(b.const(np.asarray([int(s)], np.int64), "start"))
        else:
            parts.append(b.reshape(b.cast(b.value(s), "int64"), (1,)))
    v = parts[0] if len(parts) == 1 else b.node("Concat", parts, hint="starts", shape=(len(parts),),
                                                   dtype="int64", axis=0)
    hi = np.asarray([int(n) - int(k) for n, k in zip(shape, sizes)], np.int64)
    v = b.ew("Min", v, b.const(hi, "start_max"))
    return b.ew("Max", v, b.const(np.zeros(len(shape), np.int64), "start_min"))


@exports(DynamicSlice)
def _dynamic_slice(b, op):
    src = b.g.tensors[op.inputs[0]]
    sizes = tuple(int(s) for s in op.sizes)
    x = b.view(op.inputs[0])
    if not sizes:
        return [x]
    starts = _starts(b, op, sizes, src.shape)
    ends = b.ew("Add", starts, b.const(np.asarray(sizes, np.int64), "sizes"))
    return [b.node("Slice", [x, starts, ends, b.ints(range(len(sizes)))], hint="dynamic_slice", shape=sizes,
                   dtype=src.dtype)]


@exports(DynamicUpdateSlice)
def _dynamic_update_slice(b, op):
    src, upd = b.g.tensors[op.inputs[0]], b.g.tensors[op.inputs[1]]
    x = b.view(op.inputs[0])
    if upd.size == 0 or not upd.shape:
        return [x if upd.size == 0 or upd.shape else b.view(op.inputs[1])]
    starts = _starts(b, op, upd.shape, src.shape)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in upd.shape], indexing="ij"), axis=-1).astype(np.int64)
    idx = b.ew("Add", b.const(grid, "update_positions"), starts)
    return [b.node("ScatterND", [x, idx, b.view(op.inputs[1])], hint="dynamic_update_slice", shape=src.shape,
                   dtype=src.dtype)]
