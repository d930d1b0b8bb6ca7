"""Data movement in C++: every operator but Reshape (a view, no code) is one strided copy."""
from __future__ import annotations

from ...ir.ops.base import Scalar
from ...ir.ops.movement import Concat, Expand, Identity, Pad, Reshape, Slice, Transpose
from ...ir.tensor import numel, strides_of
from ..rules import emits
from ..writer import Writer


def _collapse(shape, src_strides, dst_strides):
    """Merge adjacent dimensions that are contiguous in both views (fewer, longer loops)."""
    dims = [(n, s, d) for n, s, d in zip(shape, src_strides, dst_strides) if n != 1]
    if not dims:
        return [1], [0], [0]
    out = [list(dims[0])]
    for n, s, d in dims[1:]:
        pn, ps, pd = out[-1]
        if ps == s * n and pd == d * n:
            out[-1] = [pn * n, s, d]
        else:
            out.append([n, s, d])
    return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]


def copy_view(w: Writer, dst: str, dst_strides, dst_offset, src: str, src_strides, src_offset, shape) -> None:
    """dst[dst_offset + i.dst_strides] = src[src_offset + i.src_strides] for every i in shape."""
    shape, ss, ds = _collapse(shape, src_strides, dst_strides)
    if len(shape) == 1 and ss[0] == 1 and ds[0] == 1 and shape[0] != 1:
        w.line(f"std::copy_n({src} + {src_offset}, {shape[0]}, {dst} + {dst_offset});")
        return
    with w.loops(shape, independent=True) as idx:   # dst and src never share a buffer
        w.line(f"{dst}[{w.index(idx, ds, dst_offset)}] = {src}[{w.index(idx, ss, src_offset)}];")


@emits(Reshape)
def _reshape(op, w, g):
    pass


@emits(Identity, Transpose, Slice, Expand)
def _view(op, w, g):
    shape, ss, off = op.view(g)
    w.comment(f"{op.op_type} {op.describe()}")
    copy_view(w, w.ref(op.outputs[0]), strides_of(shape), 0, w.ref(op.inputs[0]), ss, off, shape)


@emits(Pad)
def _pad(op, w, g):
    src = g.tensors[op.inputs[0]]
    out = g.tensors[op.outputs[0]]
    fill = w.literal(op.value.value, src.dtype) if isinstance(op.value, Scalar) else f"{w.ref(op.inputs[1])}[0]"
    w.comment(f"Pad {op.describe()}")
    w.line(f"std::fill_n({w.ref(out.name)}, {out.size}, {fill});")
    # Input positions that land inside the output, per dimension.
    ost = strides_of(out.shape)
    ist = strides_of(src.shape)
    shape, sst, dst, soff, doff = [], [], [], 0, 0
    for n, (lo, hi, it), o_st, i_st, on in zip(src.shape, op.config, ost, ist, out.shape):
        step = it + 1
        first = 0 if lo >= 0 else (-lo + step - 1) // step
        last = n - 1
        while last >= first and lo + last * step >= on:
            last -= 1
        count = max(0, last - first + 1)
        shape.append(count)
        sst.append(i_st)
        dst.append(o_st * step)
        soff += first * i_st
        doff += (lo + first * step) * o_st
    if all(c > 0 for c in shape):
        copy_view(w, w.ref(out.name), dst, doff, w.ref(src.name), sst, soff, shape)
    else:   # cropped away entirely: the output is all padding, the input is never read
        w.line(f"(void){w.ref(src.name)};")


@emits(Concat)
def _concat(op, w, g):
    out = g.tensors[op.outputs[0]]
    ost = strides_of(out.shape)
    w.comment(f"Concat axis={op.axis}")
    at = 0
    for a in op.inputs:
        s = g.tensors[a].shape
        if numel(s):
            copy_view(w, w.ref(out.name), ost, at * ost[op.axis], w.ref(a), strides_of(s), 0, s)
        else:   # an empty part (maybe a model input) is never read
            w.line(f"(void){w.ref(a)};")
        at += s[op.axis]
