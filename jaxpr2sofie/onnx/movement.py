"""Data movement: Reshape, Identity, Transpose, Slice (and reverse), Expand, Pad, Concat."""
from __future__ import annotations

from ..ir.ops.elementwise import Scalar
from ..ir.ops.movement import Concat, Expand, Identity, Pad, Reshape, Slice, Transpose
from .builder import BEFORE_START, exports


def _out(b, op):
    return b.g.tensors[op.outputs[0]]


@exports(Reshape)
def _reshape(b, op):
    shape = tuple(op.shape)
    v = b.view(op.inputs[0], shape)
    src = b.env.get(op.inputs[0])
    if src in b.sums and v != src:   # jnp.mean(..., keepdims=True): the sum is reshaped, then divided
        n, make = b.sums[src]
        b.sums[v] = (n, lambda: b.reshape(make(), shape))
    return [v]


@exports(Identity)
def _identity(b, op):
    v = b.value(op.inputs[0])
    return [b.node("Identity", [v], hint="identity", shape=b.shape(v), dtype=b.dtype(v))]


@exports(Transpose)
def _transpose(b, op):
    return [b.view(op.inputs[0], perm=tuple(op.perm))]


@exports(Slice)
def _slice(b, op):
    shape = b.g.tensors[op.inputs[0]].shape
    spec = {}
    for axis, (start, limit, step, n) in enumerate(zip(op.starts, op.limits, op.steps, shape)):
        if (start, limit, step) == (0, n, 1):
            continue
        # A backwards slice ends "before index 0" with limit -1; ONNX would read -1 as the last index.
        spec[axis] = (start, BEFORE_START if step < 0 and limit < 0 else limit, step)
    return [b.slice(b.value(op.inputs[0]), spec, shape=shape)]


@exports(Expand)
def _expand(b, op):
    src = b.g.tensors[op.inputs[0]].shape
    ranked = [1] * len(op.shape)
    for k, d in enumerate(op.bdims):
        ranked[d] = src[k]
    return [b.expand(b.view(op.inputs[0], tuple(ranked)), op.shape)]


@exports(Pad)
def _pad(b, op):
    """XLA pads in three steps ONNX spells separately: interior padding, then crops, then edges."""
    src = b.g.tensors[op.inputs[0]]
    if isinstance(op.value, Scalar):
        fill = b.scalar(op.value.value, src.dtype)
    else:
        fill = b.value(op.inputs[1])
    v = b.value(src.name)
    for axis, (_, _, interior) in enumerate(op.config):
        v = b.dilate(v, axis, interior + 1, fill)
    return [b.pad_or_crop(v, [c[0] for c in op.config], [c[1] for c in op.config], fill)]


@exports(Concat)
def _concat(b, op):
    out = _out(b, op)
    return [b.node("Concat", [b.value(a) for a in op.inputs], hint="concat", shape=out.shape, dtype=out.dtype,
                   axis=op.axis)]
