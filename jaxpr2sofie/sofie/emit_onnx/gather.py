"""XLA's general gather -> ONNX Gather (a lookup along one axis: embeddings, x[i], jnp.take) or, for
everything else, GatherND on an explicit index for every output element.

Start indices are clamped (XLA's clip mode keeps the whole slice inside the operand) before any
lookup; fill mode then replaces the positions whose unclamped start was out of range.
"""
from __future__ import annotations

import numpy as np

from ..ops.gather import Gather
from .builder import exports


def _starts(b, op, operand, indices):
    """(clamped int64 start indices [B..., k], validity [B...] or None in clip mode)."""
    idx = b.cast(b.value(indices.name), "int64")
    hi = np.array([operand.shape[d] - op.slice_sizes[d] for d in op.start_index_map], np.int64)
    zero, top = b.const(np.zeros_like(hi), "zeros"), b.const(hi, "start_limit")
    clamped = b.ew("Min", b.ew("Max", idx, zero), top)
    valid = None
    if op.mode == "fill":
        # In range exactly where clamping changed nothing; every component must be. Spelled with
        # operators SOFIE's parser reads (Equal, Cast, ReduceSum), not And/ReduceMin.
        same = b.ew("Equal", idx, clamped, dtype="bool")
        k = len(op.start_index_map)
        if k == 1:
            valid = b.reshape(same, indices.shape[:-1])
        else:
            count = b.reduce("ReduceSum", b.cast(same, "float32"), [len(indices.shape) - 1])
            valid = b.ew("Equal", count, b.scalar(k, "float32"), dtype="bool")
    return clamped, valid


def _is_take(op, operand, out):
    """A lookup along one axis d: out = operand[:d] + index batch + operand[d+1:]."""
    if op.operand_batching_dims or len(op.start_index_map) != 1:
        return False
    d = op.start_index_map[0]
    full = all(op.slice_sizes[k] == n for k, n in enumerate(operand.shape) if k != d)
    nb = len(out.shape) - (len(operand.shape) - 1)
    offsets = tuple(range(d)) + tuple(range(d + nb, len(out.shape)))
    return full and tuple(op.collapsed_slice_dims) == (d,) and tuple(op.offset_dims) == offsets


@exports(Gather)
def _gather(b, op):
    operand, indices = (b.g.tensors[n] for n in op.inputs[:2])
    out = b.g.tensors[op.outputs[0]]
    starts, valid = _starts(b, op, operand, indices)
    batch_dims = op.batch_dims(len(out.shape))
    if _is_take(op, operand, out):
        flat = b.reshape(starts, indices.shape[:-1])
        y = b.node("Gather", [b.value(operand.name), flat], hint="gather", shape=out.shape, dtype=out.dtype,
                   axis=op.start_index_map[0])
    else:
        y = _gather_nd(b, op, operand, indices, out, starts, batch_dims)
    if valid is not None:
        where = b.reshape(valid, [out.shape[d] if d in batch_dims else 1 for d in range(len(out.shape))])
        y = b.ew("Where", where, y, b.scalar(op.fill_value, out.dtype), dtype=out.dtype)
    return [y]


def _gather_nd(b, op, operand, indices, out, starts, batch_dims):
    """Every output element's full operand index: its slice start (a run-time value per batch
    position) plus its offset inside the slice (a constant), then one GatherND."""
    rank, out_rank = len(operand.shape), len(out.shape)
    bshape = tuple(indices.shape[:-1])
    # start vector over all operand dims: components of the index vector, zero elsewhere
    padded = b.node("Concat", [starts, b.const(np.zeros(bshape + (1,), np.int64), "zeros")], hint="starts",
                    shape=bshape + (len(op.start_index_map) + 1,), dtype="int64", axis=-1)
    pick = [op.start_index_map.index(d) if d in op.start_index_map else len(op.start_index_map) for d in range(rank)]
    full = b.node("Gather", [padded, b.ints(pick)], hint="starts", shape=bshape + (rank,), dtype="int64", axis=-1)
    if op.operand_batching_dims:   # vmap of x[i]: operand dim od follows index batch dim idim
        extra = np.zeros(bshape + (rank,), np.int64)
        for od, idim in zip(op.operand_batching_dims, op.start_indices_batching_dims):
            extra[..., od] = np.arange(bshape[idim]).reshape([-1 if k == idim else 1 for k in range(len(bshape))])
        full = b.ew("Add", full, b.const(extra, "batch_index"))
    on_batch = [out.shape[d] if d in batch_dims else 1 for d in range(out_rank)]
    full = b.reshape(full, on_batch + [rank])
    offsets = np.zeros([1 if d in batch_dims else out.shape[d] for d in range(out_rank)] + [rank], np.int64)
    for od, operand_dim in zip(op.offset_dims, op.window_dims(rank)):
        ramp = np.arange(out.shape[od]).reshape([-1 if k == od else 1 for k in range(out_rank)])
        offsets[..., operand_dim] = np.broadcast_to(ramp, offsets.shape[:-1])
    where = b.ew("Add", full, b.const(offsets, "slice_offsets"))
    return b.node("GatherND", [b.value(operand.name), where], hint="gather", shape=out.shape, dtype=out.dtype)
