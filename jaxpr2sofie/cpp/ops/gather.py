"""Gather, scatter and dynamic slices in C++: read an index vector, clamp or check it, copy a strided view."""
from __future__ import annotations

from contextlib import nullcontext

from ...ir.ops.gather import DynamicSlice, DynamicUpdateSlice, Gather, Scatter
from ...ir.tensor import ctype, numel, strides_of
from ..rules import emits
from .movement import copy_view

# how a scatter combines an update u into the destination d
_COMBINE = {"set": "{d} = {u};", "add": "{d} += {u};", "mul": "{d} *= {u};",
            "min": "{d} = ({u} < {d} || {u} != {u}) ? {u} : {d};", "max": "{d} = ({u} > {d} || {u} != {u}) ? {u} : {d};"}


def _c_int64(n) -> str:
    """A size as a signed C++ value: a literal, or a run-time expression of the batch, cast."""
    return str(n) if isinstance(n, int) else f"static_cast<int64_t>({n})"


def start_terms(w, indices, b, idx_st, dim_map, operand_shape, sizes, operand_st, checked, batching):
    """Read the start index of each mapped operand dimension at batch position `b`: a gather's
    slice start or a scatter's update start. Unchecked starts are clamped as XLA clamps them (the
    whole slice stays inside the operand); checked ones give in-range conditions instead (fill /
    drop modes). Returns the (index names, operand strides) of the start offset and the conditions."""
    names, strides, conds = [], [], []
    for k, d in enumerate(dim_map):
        s = w.fresh("s")
        w.line(f"int64_t {s} = static_cast<int64_t>({indices}[{w.index(b, idx_st[:-1], k)}]);")
        hi = _c_int64(operand_shape[d] - sizes[d])
        if checked:
            conds.append(f"{s} >= 0 && {s} <= {hi}")
        else:
            w.line(f"{s} = {s} < 0 ? 0 : ({s} > {hi} ? {hi} : {s});")
        names.append(s)
        strides.append(operand_st[d])
    for od, idim in batching:
        names.append(b[idim])
        strides.append(operand_st[od])
    return names, strides, conds


@emits(Gather)
def _gather(op, w, g):
    operand, indices = (g.tensors[n] for n in op.inputs[:2])
    out = g.tensors[op.outputs[0]]
    T, oper_st, out_st = ctype(operand.dtype), strides_of(operand.shape), strides_of(out.shape)
    idx_st = strides_of(indices.shape)
    batch_dims = op.batch_dims(len(out.shape))
    window = op.window_dims(len(operand.shape))
    w.comment(f"Gather {op.describe()}")
    if out.size == 0:
        return
    with w.loops([out.shape[d] for d in batch_dims], stem="b") as b:
        # Batch position b (in index-dimension order) -> slice start, one term per operand dim.
        names, strides, in_range = start_terms(
            w, w.ref(indices.name), b, idx_st, op.start_index_map, operand.shape, op.slice_sizes, oper_st,
            op.mode == "fill", zip(op.operand_batching_dims, op.start_indices_batching_dims))
        dst = w.fresh("dst")
        w.line(f"{T}* {dst} = {w.ref(out.name)} + {w.index(b, [out_st[d] for d in batch_dims])};")
        shape = [out.shape[d] for d in op.offset_dims]
        dst_st = [out_st[d] for d in op.offset_dims]

        def copy_slice():
            src = w.fresh("src")
            w.line(f"const {T}* {src} = {w.ref(operand.name)} + {w.index(names, strides)};")
            copy_view(w, dst, dst_st, 0, src, [oper_st[d] for d in window], 0, shape)

        if in_range:   # the start is only turned into a pointer once known to be in bounds
            with w.block(f"if ({' && '.join(in_range)})"):
                copy_slice()
            with w.block("else"):
                _fill(w, dst, dst_st, shape, w.literal(op.fill_value, operand.dtype))
        else:
            copy_slice()


def _fill(w, dst, dst_strides, shape, value):
    if numel(shape) > 1 and tuple(s for s, n in zip(dst_strides, shape) if n != 1) == \
            tuple(s for s, n in zip(strides_of(shape), shape) if n != 1):
        w.line(f"std::fill_n({dst}, {numel(shape)}, {value});")
        return
    with w.loops(shape, stem="f") as f:
        w.line(f"{dst}[{w.index(f, dst_strides)}] = {value};")


def _clamped_offset(w, g, dims, starts, sizes, shape) -> str:
    """C++ element offset of a window whose start per dimension is a literal or the first element
    of a run-time tensor, each clamped so the window stays inside `shape` (as XLA clamps)."""
    st = strides_of(shape)
    terms = []
    for d, s in enumerate(starts):
        hi = shape[d] - sizes[d]
        if isinstance(s, str):
            v, top = w.fresh("start"), _c_int64(hi)
            w.line(f"int64_t {v} = static_cast<int64_t>({w.ref(s)}[0]);")
            w.line(f"{v} = {v} < 0 ? 0 : ({v} > {top} ? {top} : {v});")
            terms.append(f"{v} * {st[d]}")
        elif min(max(int(s), 0), hi) * st[d]:
            terms.append(str(min(max(int(s), 0), hi) * st[d]))
    return " + ".join(terms) or "0"


@emits(DynamicSlice)
def _dynamicslice(op, w, g):
    src = g.tensors[op.inputs[0]]
    w.comment(f"DynamicSlice {op.describe()}")
    if numel(op.sizes) == 0:
        return
    off = _clamped_offset(w, g, range(len(op.sizes)), op.starts, op.sizes, src.shape)
    copy_view(w, w.ref(op.outputs[0]), strides_of(op.sizes), 0, f"({w.ref(src.name)} + {off})",
              strides_of(src.shape), 0, op.sizes)


@emits(DynamicUpdateSlice)
def _dynamicupdateslice(op, w, g):
    src, upd = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    out = w.ref(op.outputs[0])
    w.comment(f"DynamicUpdateSlice {op.describe()}")
    if w.ref(src.name) != out and src.size:
        w.line(f"std::copy_n({w.ref(src.name)}, {src.size}, {out});")
    if upd.size == 0:
        return
    off = _clamped_offset(w, g, range(len(upd.shape)), op.starts, upd.shape, src.shape)
    copy_view(w, f"({out} + {off})", strides_of(src.shape), 0, w.ref(upd.name), strides_of(upd.shape), 0,
              upd.shape)


@emits(Scatter)
def _scatter(op, w, g):
    operand, indices, updates = (g.tensors[n] for n in op.inputs)
    out = w.ref(op.outputs[0])
    op_st, idx_st, up_st = strides_of(operand.shape), strides_of(indices.shape), strides_of(updates.shape)
    window = [d for d in range(len(operand.shape))
              if d not in op.inserted_window_dims and d not in op.operand_batching_dims]
    scatter_dims = [d for d in range(len(updates.shape)) if d not in op.update_window_dims]
    size = {d: 1 for d in range(len(operand.shape))}
    size.update({od: updates.shape[ud] for od, ud in zip(window, op.update_window_dims)})
    w.comment(f"Scatter {op.describe()}")
    if w.ref(operand.name) != out and operand.size:
        w.line(f"std::copy_n({w.ref(operand.name)}, {operand.size}, {out});")
    if updates.size == 0:
        return
    with w.loops([updates.shape[d] for d in scatter_dims], stem="u") as b:
        names, strides, fits = start_terms(
            w, w.ref(indices.name), b, idx_st, op.scatter_dims_to_operand_dims, operand.shape, size, op_st,
            op.mode == "drop", zip(op.operand_batching_dims, op.scatter_indices_batching_dims))
        with w.block(f"if ({' && '.join(fits)})") if fits else nullcontext():
            base = w.fresh("at")
            w.line(f"const int64_t {base} = {w.index(names, strides)};")
            with w.loops([updates.shape[d] for d in op.update_window_dims], stem="k") as k:
                dst = f"{out}[{base} + {w.index(k, [op_st[od] for od in window])}]"
                at = w.index(list(b) + list(k), [up_st[d] for d in (*scatter_dims, *op.update_window_dims)])
                src = f"{w.ref(updates.name)}[{at}]"
                w.line(_COMBINE[op.kind].format(d=dst, u=src))
