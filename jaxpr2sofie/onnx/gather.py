"""XLA's general gather -> ONNX Gather (a lookup along one axis: embeddings, x[i], jnp.take) or, for
everything else, GatherND on an explicit index for every output element. XLA's scatter -> one
ScatterND over the flattened operand, with an explicit target for every update element.

Start indices are clamped (XLA's clip mode keeps the whole slice inside the operand) before any
lookup; fill mode then replaces the positions whose unclamped start was out of range. A scatter
in drop mode sends the updates of a window that does not fit to scratch slots appended after
the operand (one per update element, so no two writes meet there), sliced off afterwards.
"""
from __future__ import annotations

import numpy as np

from ..ir.ops.gather import Gather, Scatter
from .builder import NotExportable, exports, symbolic


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


@exports(Scatter)
def _scatter(b, op):
    """ScatterND on the operand flattened to [n] plus m scratch slots (m = update elements), each
    update element at its flat target. A plain set with two updates on one element is unspecified
    in ONNX; the C++ (and XLA on CPU) let the last one win, so every earlier one is sent to its
    scratch slot first (the last writer of each element found with a max-reduction ScatterND)."""
    operand, indices, updates = (b.g.tensors[n] for n in op.inputs)
    _static_shapes(op, operand, indices, updates)
    x = b.value(operand.name)
    if updates.size == 0:
        return [x]
    if op.kind in ("min", "max") and b.opset < 18:
        raise NotExportable(f"Scatter {op.kind} is a ScatterND with reduction '{op.kind}', which ONNX has from "
                            "opset 18 (to_onnx(opset=18))")
    n, m = operand.size, updates.size
    ordinal = np.arange(m, dtype=np.int64)
    scratch = b.const(n + ordinal, "scatter_scratch")
    target, valid = _scatter_targets(b, op, operand, indices, updates)
    target = b.reshape(target, (m,))
    if valid is not None:
        target = b.ew("Where", b.reshape(valid, (m,)), target, scratch)
    windows = int(np.prod(indices.shape[:-1], dtype=np.int64))   # the elements of one window never collide
    if op.kind == "set" and windows > 1:
        if b.opset < 18:
            raise NotExportable("Scatter (set) may write one element twice, which ONNX ScatterND leaves "
                                "unspecified; keeping the last write (as the C++ does) needs a max-reduction "
                                "ScatterND, from opset 18 (to_onnx(opset=18))")
        last = b.node("ScatterND", [b.const(np.full(n + m, -1, np.int64), "no_writer"), b.reshape(target, (m, 1)),
                                    b.const(ordinal, "update_ordinal")],
                      hint="last_writer", shape=(n + m,), dtype="int64", reduction="max")
        wins = b.ew("Equal", b.node("Gather", [last, target], hint="writer", shape=(m,), dtype="int64", axis=0),
                    b.const(ordinal, "update_ordinal"), dtype="bool")
        target = b.ew("Where", wins, target, scratch)
    data = b.node("Concat", [b.reshape(x, (n,)), b.const(np.zeros(m, operand.dtype), "scratch_slots")],
                  hint="scatter_data", shape=(n + m,), dtype=operand.dtype, axis=0)
    attrs = {} if op.kind == "set" else {"reduction": op.kind}   # add, mul, min, max: ONNX's names too
    y = b.node("ScatterND", [data, b.reshape(target, (m, 1)), b.reshape(b.value(updates.name), (m,))],
               hint="scatter", shape=(n + m,), dtype=operand.dtype, **attrs)
    return [b.reshape(b.slice(y, {0: (0, n, 1)}), operand.shape)]


def _static_shapes(op, *tensors):
    for t in tensors:
        if any(symbolic(d) for d in t.shape):
            raise NotExportable(f"{op.op_type} on {t.name} of shape {tuple(t.shape)}: the flat targets are "
                                "computed for static shapes only")


def _scatter_targets(b, op, operand, indices, updates):
    """(flat operand index of every update element [updates.shape], in-range mask or None): the
    window start per index vector (clamped, or checked in drop mode, as Scatter.emit does) plus
    the element's constant offset inside the window."""
    rank = len(operand.shape)
    strides = np.cumprod((1,) + tuple(operand.shape[:0:-1]), dtype=np.int64)[::-1]
    window = [d for d in range(rank) if d not in op.inserted_window_dims and d not in op.operand_batching_dims]
    scatter_dims = [d for d in range(len(updates.shape)) if d not in op.update_window_dims]
    size = {d: 1 for d in range(rank)}
    size.update({od: updates.shape[ud] for od, ud in zip(window, op.update_window_dims)})
    bshape = tuple(indices.shape[:-1])
    dims = list(op.scatter_dims_to_operand_dims)
    idx = b.cast(b.value(indices.name), "int64")
    hi = b.const(np.array([operand.shape[d] - size[d] for d in dims], np.int64), "start_limit")
    zero = b.const(np.zeros(len(dims), np.int64), "zeros")
    valid = None
    if op.mode == "drop":
        fits = b.ew("And", b.ew("GreaterOrEqual", idx, zero, dtype="bool"), b.ew("LessOrEqual", idx, hi, dtype="bool"))
        every = b.reduce("ReduceMin", b.cast(fits, "int64"), [len(bshape)])
        valid = b.cast(every, "bool")
        start = idx
    else:
        start = b.ew("Min", b.ew("Max", idx, zero), hi)
    base = b.reduce("ReduceSum", b.ew("Mul", start, b.const(strides[dims], "operand_strides")), [len(bshape)])
    if op.operand_batching_dims:   # vmap of x.at[i]: operand dim od follows index batch dim idim
        extra = np.zeros(bshape, np.int64)
        for od, idim in zip(op.operand_batching_dims, op.scatter_indices_batching_dims):
            extra += strides[od] * np.arange(bshape[idim]).reshape([-1 if k == idim else 1 for k in range(len(bshape))])
        base = b.ew("Add", base, b.const(extra, "batch_offset"))
    on_scatter = [updates.shape[d] if d in scatter_dims else 1 for d in range(len(updates.shape))]
    offsets = np.zeros([1 if d in scatter_dims else updates.shape[d] for d in range(len(updates.shape))], np.int64)
    for od, ud in zip(window, op.update_window_dims):
        offsets = offsets + strides[od] * np.arange(updates.shape[ud]).reshape(
            [-1 if k == ud else 1 for k in range(len(updates.shape))])
    target = b.ew("Add", b.reshape(base, on_scatter), b.const(offsets, "window_offsets"))
    target = b.expand(target, updates.shape)
    return target, None if valid is None else b.expand(b.reshape(valid, on_scatter), updates.shape)
