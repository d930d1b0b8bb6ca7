"""Data-movement operators: Reshape (a view), Identity, Transpose, Slice, Reverse, Expand, Pad, Concat.

All but Reshape are one primitive underneath: copy a strided view of the source into a
strided view of the destination. Each operator only computes its views.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..tensor import numel, strides_of
from ..writer import Writer
from .base import Op, Scalar


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
    with w.loops(shape) as idx:
        w.line(f"{dst}[{w.index(idx, ds, dst_offset)}] = {src}[{w.index(idx, ss, src_offset)}];")


@dataclass(eq=False)
class Reshape(Op):
    """A view: same buffer, new shape. Costs nothing at run time."""
    shape: tuple = ()
    aliases_input = True

    def infer(self, g):
        src = g.tensors[self.inputs[0]]
        assert numel(self.shape) == src.size, (self.shape, src.shape)
        return [(tuple(self.shape), src.dtype)]

    def emit(self, w, g):
        pass

    def describe(self):
        return str(tuple(self.shape))


@dataclass(eq=False)
class View(Op):
    """Base of the strided-copy family: subclasses give `view(g)` = (out_shape, src_strides, src_offset)."""

    def view(self, g):
        raise NotImplementedError

    def infer(self, g):
        shape, _, _ = self.view(g)
        return [(tuple(shape), g.tensors[self.inputs[0]].dtype)]

    def emit(self, w, g):
        shape, ss, off = self.view(g)
        w.comment(f"{self.op_type} {self.describe()}")
        copy_view(w, w.ref(self.outputs[0]), strides_of(shape), 0, w.ref(self.inputs[0]), ss, off, shape)


@dataclass(eq=False)
class Identity(View):
    def view(self, g):
        s = g.tensors[self.inputs[0]].shape
        return s, strides_of(s), 0


@dataclass(eq=False)
class Transpose(View):
    perm: tuple = ()

    def view(self, g):
        s = g.tensors[self.inputs[0]].shape
        st = strides_of(s)
        return tuple(s[p] for p in self.perm), tuple(st[p] for p in self.perm), 0

    def describe(self):
        return f"perm={tuple(self.perm)}"


@dataclass(eq=False)
class Slice(View):
    """Also covers Reverse: a negative step walks a dimension backwards."""
    starts: tuple = ()
    limits: tuple = ()
    steps: tuple = ()

    def view(self, g):
        st = strides_of(g.tensors[self.inputs[0]].shape)
        shape, strides, off = [], [], 0
        for a, b, c, s in zip(self.starts, self.limits, self.steps, st):
            if c > 0:
                n = max(0, -(-(b - a) // c))
            else:
                n = max(0, -(-(a - b) // -c))
            shape.append(n)
            strides.append(s * c)
            off += a * s
        return tuple(shape), tuple(strides), off

    def describe(self):
        return f"{list(zip(self.starts, self.limits, self.steps))}"


def reverse(shape, dims):
    """Slice parameters that reverse `dims` of a tensor of `shape`."""
    starts = tuple(n - 1 if k in dims else 0 for k, n in enumerate(shape))
    limits = tuple(-1 if k in dims else n for k, n in enumerate(shape))
    steps = tuple(-1 if k in dims else 1 for k in range(len(shape)))
    return starts, limits, steps


@dataclass(eq=False)
class Expand(View):
    """broadcast_in_dim: operand dim k becomes output dim bdims[k]; other output dims repeat."""
    shape: tuple = ()
    bdims: tuple = ()

    def view(self, g):
        src = g.tensors[self.inputs[0]].shape
        st = strides_of(src)
        strides = [0] * len(self.shape)
        for k, d in enumerate(self.bdims):
            if src[k] != 1:
                strides[d] = st[k]
        return tuple(self.shape), tuple(strides), 0

    def describe(self):
        return f"to {tuple(self.shape)} dims={tuple(self.bdims)}"


@dataclass(eq=False)
class Pad(Op):
    """lax.pad: per dimension (low, high, interior); negative low/high crop."""
    config: tuple = ()
    value: object = None    # Scalar, or None when the pad value is inputs[1] (a run-time scalar)

    def infer(self, g):
        src = g.tensors[self.inputs[0]]
        shape = tuple(lo + hi + n + (max(0, n - 1) * it if it else 0) for n, (lo, hi, it) in zip(src.shape, self.config))
        return [(shape, src.dtype)]

    def emit(self, w, g):
        src = g.tensors[self.inputs[0]]
        out = g.tensors[self.outputs[0]]
        fill = w.literal(self.value.value, src.dtype) if isinstance(self.value, Scalar) else f"{w.ref(self.inputs[1])}[0]"
        w.comment(f"Pad {self.describe()}")
        w.line(f"std::fill_n({w.ref(out.name)}, {out.size}, {fill});")
        # Input positions that land inside the output, per dimension.
        ost = strides_of(out.shape)
        ist = strides_of(src.shape)
        shape, sst, dst, soff, doff = [], [], [], 0, 0
        for n, (lo, hi, it), o_st, i_st, on in zip(src.shape, self.config, ost, ist, out.shape):
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

    def describe(self):
        return f"{tuple(self.config)}"


@dataclass(eq=False)
class Concat(Op):
    axis: int = 0

    def infer(self, g):
        shapes = [g.tensors[a].shape for a in self.inputs]
        out = list(shapes[0])
        out[self.axis] = sum(s[self.axis] for s in shapes)
        return [(tuple(out), g.tensors[self.inputs[0]].dtype)]

    def emit(self, w, g):
        out = g.tensors[self.outputs[0]]
        ost = strides_of(out.shape)
        w.comment(f"Concat axis={self.axis}")
        at = 0
        for a in self.inputs:
            s = g.tensors[a].shape
            if numel(s):
                copy_view(w, w.ref(out.name), ost, at * ost[self.axis], w.ref(a), strides_of(s), 0, s)
            else:   # an empty part (maybe a model input) is never read
                w.line(f"(void){w.ref(a)};")
            at += s[self.axis]

    def describe(self):
        return f"axis={self.axis}"
