"""TopK as ONNX TopK (largest first, sorted; ONNX puts the lower index first among equal values,
as lax.top_k does); its int64 indices are cast to the operator's int32."""
from __future__ import annotations

import numpy as np

from ..ops.sort import TopK
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
