"""TopK as ONNX TopK (largest first, sorted; ONNX puts the lower index first among equal values,
as lax.top_k does); its int64 indices are cast to the operator's int32."""
from __future__ import annotations

import numpy as np

from ..ir.ops.sort import Sort, TopK
from ..ir.tensor import numel
from .builder import exports


@exports(TopK)
def _top_k(b, op):
    x = b.g.tensors[op.inputs[0]]
    axis = op.axis % len(x.shape)
    shape = list(x.shape)
    shape[axis] = op.k
    vals, idx = b.node("TopK", [b.view(op.inputs[0]), b.const(np.asarray([op.k], np.int64), "k")], hint="top_k",
                       n_out=2, shape=shape, dtype=x.dtype, axis=axis, largest=1, sorted=1)
    b.meta[idx] = (tuple(shape), "int64")
    return [vals, b.cast(idx, "int32")]


@exports(Sort)
def _sort(b, op):
    """Lexicographic stable sort as successive stable ascending TopKs (k = the axis length), from the
    last key to the first, composing the permutation; a float key is two keys (NaN last, then the
    value with NaN as 0), as jnp.sort orders. Every operand is gathered through the permutation."""
    x0 = b.g.tensors[op.inputs[0]]
    shape, axis = tuple(x0.shape), op.axis % len(x0.shape)
    n = shape[axis]
    if numel(shape) == 0:
        return [b.view(i) for i in op.inputs]
    keys = []
    for k in op.inputs[:op.num_keys]:
        v, dt = b.view(k), b.g.tensors[k].dtype
        if dt.startswith("float"):
            nan = b.node("IsNaN", [v], hint="isnan", shape=shape, dtype="bool")
            keys += [b.cast(nan, "int32"), b.ew("Where", nan, b.scalar(0, dt), v)]
        elif dt == "bool":
            keys.append(b.cast(v, "int32"))
        else:
            keys.append(v)
    kconst = b.const(np.asarray([n], np.int64), "k")
    perm = None
    for key in reversed(keys):
        kk = key if perm is None else b.node("GatherElements", [key, perm], hint="sort_key", shape=shape,
                                               dtype=b.dtype(key), axis=axis)
        _, p = b.node("TopK", [kk, kconst], hint="sort", n_out=2, shape=shape, dtype=b.dtype(kk), axis=axis,
                      largest=0, sorted=1)
        b.meta[p] = (shape, "int64")
        perm = p if perm is None else b.node("GatherElements", [perm, p], hint="perm", shape=shape, dtype="int64",
                                             axis=axis)
    return [b.node("GatherElements", [b.view(i), perm], hint="sorted", shape=shape, dtype=b.g.tensors[i].dtype,
                   axis=axis) for i in op.inputs]
