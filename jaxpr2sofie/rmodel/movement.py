"""Data movement as SOFIE's Reshape, Transpose, Concat, Slice, Expand, Pad and Identity."""
from __future__ import annotations

import numpy as np

from ..ir.dims import Sym
from ..ir.ops.elementwise import Scalar
from ..ir.ops.movement import Concat, Expand, Identity, Pad, Reshape, Slice, Transpose
from .context import NotBuildable, builds


def _static(shape, what):
    if any(isinstance(d, Sym) for d in shape):
        raise NotBuildable(f"{what} of shape {tuple(shape)}: SOFIE's operator takes static shapes here")


def _float(ctx, name, what):
    if ctx.g.tensors[name].dtype != "float32":
        raise NotBuildable(f"{what} of {ctx.g.tensors[name].dtype}: SOFIE's operator is float only")


@builds(Reshape)
def _reshape(ctx, op):
    src = ctx.g.tensors[op.inputs[0]]
    if src.data is not None and op.inputs[0] not in ctx.env:
        return [ctx.weight(src.name, np.asarray(src.data).reshape(op.shape), f"{src.name}_reshaped")]
    return [ctx.reshape(ctx.value(op.inputs[0]), op.shape)]


@builds(Identity)
def _identity(ctx, op):
    return [ctx.value(op.inputs[0])]


@builds(Transpose)
def _transpose(ctx, op):
    src = ctx.g.tensors[op.inputs[0]]
    if src.data is not None and op.inputs[0] not in ctx.env:
        return [ctx.weight(src.name, np.transpose(src.data, op.perm), f"{src.name}_transposed")]
    return [ctx.transpose(ctx.value(op.inputs[0]), op.perm)]


@builds(Concat)
def _concat(ctx, op):
    out = ctx.g.tensors[op.outputs[0]]
    ins = [ctx.value(a) for a in op.inputs]
    y = ctx.fresh("concat")
    return [ctx.add(ctx.sofie.ROperator_Concat(ins, op.axis, 0, y), ins, [y], out.shape, out.dtype)]


@builds(Slice)
def _slice(ctx, op):
    shape = ctx.g.tensors[op.inputs[0]].shape
    axes = [a for a, (start, limit, step, n) in enumerate(zip(op.starts, op.limits, op.steps, shape))
            if (start, limit, step) != (0, n, 1)]
    if not axes:
        return [ctx.value(op.inputs[0])]
    forward = {a: (op.starts[a], op.limits[a], op.steps[a]) for a in axes if op.steps[a] > 0}
    v = strided_slice(ctx, ctx.value(op.inputs[0]), shape, forward) if forward else ctx.value(op.inputs[0])
    for a in axes:
        if op.steps[a] < 0:   # walked backwards (lax.rev too): a Gather of the indices, in their order
            v = _gather(ctx, v, a, range(op.starts[a], op.limits[a], op.steps[a]))
    return [v]


def _gather(ctx, v, axis, indices):
    """`v` at `indices` (ints known now) along `axis`: SOFIE's Gather."""
    indices = [int(i) for i in indices]
    if not indices:
        raise NotBuildable("a slice that keeps no element")
    idx = ctx.ints(indices, "indices")
    y = ctx.fresh("reversed")
    shape = ctx.shape(v)
    out = None if shape is None else shape[:axis] + (len(indices),) + shape[axis + 1:]
    return ctx.add(ctx.sofie.ROperator_Gather(axis, v, idx, y), [v, idx], [y], out, ctx.dtype(v))


def strided_slice(ctx, v, shape, spec):
    """`v[start:end:step]` on the axes of `spec` ({axis: (start, end, step)}). SOFIE's Slice sizes its
    output floor((end - start) / step) but its loop writes every step-th element up to `end` (a heap
    overflow when the step does not divide the span): each span is made a multiple of its step,
    zero-padding the end of the axis where that runs past it."""
    axes = sorted(spec)
    count = {a: max(0, -(-(spec[a][1] - spec[a][0]) // spec[a][2])) for a in axes}
    end = {a: spec[a][0] + count[a] * spec[a][2] for a in axes}
    over = [max(0, end[a] - shape[a]) if a in spec else 0 for a in range(len(shape))]
    if any(over):
        if ctx.dtype(v) != "float32":
            raise NotBuildable("a strided slice of non-float data whose step does not divide its span")
        v = pad(ctx, v, shape, [0] * len(shape), over)
    names = [ctx.ints([spec[a][0] for a in axes]), ctx.ints([end[a] for a in axes]), ctx.ints(axes),
             ctx.ints([spec[a][2] for a in axes])]
    y = ctx.fresh("slice")
    out = tuple(count[a] if a in count else n for a, n in enumerate(shape))
    return ctx.add(ctx.sofie.ROperator_Slice_int64(v, names, y), [v, *names], [y], out, ctx.dtype(v))


@builds(Expand)
def _expand(ctx, op):
    src = ctx.g.tensors[op.inputs[0]]
    ranked = [1] * len(op.shape)
    for k, d in enumerate(op.bdims):
        ranked[d] = src.shape[k]
    if src.data is not None and op.inputs[0] not in ctx.env:
        if not any(isinstance(d, Sym) for d in op.shape):   # a weight broadcast now
            arr = np.broadcast_to(np.asarray(src.data).reshape(ranked), op.shape)
            return [ctx.weight(src.name, arr, f"{src.name}_expanded")]
    _static(op.shape, "a broadcast")
    _float(ctx, src.name, "a broadcast")
    x = ctx.reshape(ctx.value(src.name), tuple(ranked))
    if tuple(ranked) == tuple(op.shape):
        return [x]
    y = ctx.fresh("expand")
    shape = ctx.ints(op.shape)
    return [ctx.add(ctx.sofie.ROperator_Expand["float"](x, shape, y), [x, shape], [y], op.shape)]


@builds(Pad)
def _pad(ctx, op):
    src = ctx.g.tensors[op.inputs[0]]
    _float(ctx, src.name, "a pad")
    if any(it for _, _, it in op.config):
        raise NotBuildable("interior (dilating) padding: SOFIE's Pad pads the edges only")
    if not isinstance(op.value, Scalar):
        raise NotBuildable("a pad value computed at run time: SOFIE's Pad reads a constant")
    v = crop(ctx, ctx.value(src.name), src.shape, [c[0] for c in op.config], [c[1] for c in op.config])
    return [pad(ctx, v, ctx.shape(v), [max(0, c[0]) for c in op.config], [max(0, c[1]) for c in op.config],
                float(op.value.value))]


def crop(ctx, v, shape, lo, hi):
    """The negative parts of (lo, hi) padding as one Slice."""
    axes = [a for a in range(len(shape)) if lo[a] < 0 or hi[a] < 0]
    if not axes:
        return v
    _static([shape[a] for a in axes], "a crop")
    names = [ctx.ints([max(0, -lo[a]) for a in axes]), ctx.ints([shape[a] + min(0, hi[a]) for a in axes]),
             ctx.ints(axes), ctx.ints([1] * len(axes))]
    y = ctx.fresh("crop")
    out = tuple(n + min(0, lo[a]) + min(0, hi[a]) for a, n in enumerate(shape))
    return ctx.add(ctx.sofie.ROperator_Slice_int64(v, names, y), [v, *names], [y], out, ctx.dtype(v))


def pad(ctx, v, shape, lo, hi, value=0.0):
    """Constant padding by non-negative (lo, hi) per axis."""
    if not any(lo) and not any(hi):
        return v
    y = ctx.fresh("pad")
    pads, fill = ctx.ints(list(lo) + list(hi)), ctx.const(np.float32(value), "pad_value")
    out = tuple(n + a + b for n, a, b in zip(shape, lo, hi))
    return ctx.add(ctx.sofie.ROperator_Pad["float"](v, pads, fill, "", y, "constant"), [v, pads, fill], [y], out)


def edge_pad(ctx, v, shape, lo, hi):
    """Padding by non-negative (lo, hi) per axis with copies of the edge elements (one-element
    crops and a Concat per axis): what a max pool may pad with instead of -inf, which SOFIE cannot
    write, while every window reaching into the padding also holds the edge element."""
    for axis, (a, c) in enumerate(zip(lo, hi)):
        if not a and not c:
            continue
        n = shape[axis]
        cut = [0] * len(shape)
        first = crop(ctx, v, shape, cut, [-(n - 1) if k == axis else 0 for k in range(len(shape))])
        last = crop(ctx, v, shape, [-(n - 1) if k == axis else 0 for k in range(len(shape))], cut)
        ins = [first] * a + [v] + [last] * c
        shape = tuple(m + (a + c if k == axis else 0) for k, m in enumerate(shape))
        y = ctx.fresh("edge_pad")
        v = ctx.add(ctx.sofie.ROperator_Concat(ins, axis, 0, y), list(dict.fromkeys(ins)), [y], shape, ctx.dtype(v))
    return v
