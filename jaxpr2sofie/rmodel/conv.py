"""Conv (channels-last in our IR) as SOFIE's Conv (NCHW, OIHW), and window reductions as its Pool.

Transposes go around each convolution and fold between two of them (Context.transpose), so a chain
of convolutions stays NCHW. The kernel is rearranged at conversion time. SOFIE's traps are avoided
as the ONNX export for SOFIE avoids them: asymmetric padding is an explicit Pad (SOFIE averages
it), and a dilated kernel is written out with its zeros (SOFIE dilates into a buffer whose holes it
never zeroes). A fused epilogue runs in the NCHW layout: a leading per-channel bias is the Conv's
own bias input, every other stage one elementwise operator.
"""
from __future__ import annotations

import numpy as np

from ..ir.dims import Sym
from ..ir.ops.base import Scalar
from ..ir.ops.conv import Conv
from ..ir.ops.epilogue import operand_kind
from ..ir.ops.pool import Pool
from .context import NotBuildable, builds
from .elementwise import COMPOSED, binary, unary
from .movement import crop, edge_pad, pad, strided_slice

def to_first(d):
    return (0, d + 1, *range(1, d + 1))


def to_last(d):
    return (0, *range(2, d + 2), 1)


def _kernel(ctx, op, d):
    """The kernel as SOFIE wants it, [Cout, Cg, K...], with its dilation written out as zeros."""
    k = ctx.g.tensors[op.inputs[1]]
    if k.data is None:
        raise NotBuildable("a kernel computed at run time: SOFIE's Conv reads a weight")
    arr = np.asarray(k.data)
    if op.grouped_kernel(ctx.g):   # [G, K..., Cg, Og] -> [G, Og, Cg, K...] -> [Cout, Cg, K...]
        g, og, cg = arr.shape[0], arr.shape[-1], arr.shape[-2]
        arr = np.transpose(arr, (0, d + 2, d + 1, *range(1, d + 1))).reshape(g * og, cg, *arr.shape[1:-2])
    else:
        arr = np.transpose(arr, (d + 1, d, *range(d)))
    dil = [int(r) for r in op.rhs_dilation]
    if set(dil) != {1}:
        full = np.zeros(arr.shape[:2] + tuple((n - 1) * r + 1 for n, r in zip(arr.shape[2:], dil)), arr.dtype)
        full[(slice(None), slice(None), *(slice(None, None, r) for r in dil))] = arr
        arr = full
    return ctx.weight(k.name, arr, f"{k.name}_oihw"), list(arr.shape[2:])


def _edges(ctx, x, shape, lo, hi, fill=0.0):
    """Crop the negative and pad the asymmetric parts of (lo, hi) on the spatial axes of NC... `x`;
    returns it and the symmetric padding left for the operator."""
    sym = [a if a == c and a >= 0 else 0 for a, c in zip(lo, hi)]
    lo2, hi2 = [0, 0] + [a - s for a, s in zip(lo, sym)], [0, 0] + [c - s for c, s in zip(hi, sym)]
    x = crop(ctx, x, shape, lo2, hi2)
    return pad(ctx, x, ctx.shape(x), [max(0, a) for a in lo2], [max(0, c) for c in hi2], fill), sym


@builds(Conv)
def _conv(ctx, op):
    n, spatial, cin, _, _, cout = op.dims(ctx.g)
    d = len(spatial)
    if ctx.g.tensors[op.inputs[0]].dtype != "float32":
        raise NotBuildable("a convolution of non-float data")
    x = ctx.transpose(ctx.value(op.inputs[0]), to_first(d))
    out = ctx.g.tensors[op.outputs[0]].shape
    stages = list(op.epilogue)
    if any(ld != 1 for ld in op.lhs_dilation):
        y = _conv_transpose(ctx, op, x, d)
    else:
        x, sym = _edges(ctx, x, (n, cin, *spatial), [p[0] for p in op.padding], [p[1] for p in op.padding])
        w, ksizes = _kernel(ctx, op, d)
        bias = _conv_bias(ctx, stages, cout, out)
        y = ctx.fresh("conv")
        ins = [x, w] + ([bias] if bias else [])
        ctx.add(ctx.sofie.ROperator_Conv["float"]("NOTSET", [1] * d, op.groups, ksizes, sym + sym, list(op.strides),
                                                   *ins, y), ins, [y], (n, cout, *out[1:-1]))
    for s in stages:
        y = _stage(ctx, s, y, out, d)
    return [ctx.transpose(y, to_last(d))]


def _conv_transpose(ctx, op, x, d):
    """An input-dilated convolution is SOFIE's ConvTranspose (stride = the input dilation) with the
    kernel flipped, [Cin, Cout, K...], its dilation written out as zeros; the full output is then
    cropped or padded to XLA's padding and subsampled by the window strides. Its bias stays an
    epilogue stage (padding added after the ConvTranspose holds no bias)."""
    n, spatial, cin, ksizes, _, cout = op.dims(ctx.g)
    if op.groups != 1 or d > 2:
        raise NotBuildable(f"a transposed convolution {'with feature groups' if op.groups != 1 else f'in {d}-D'}: "
                           "SOFIE's ConvTranspose takes 1-D and 2-D ungrouped ones")
    k = ctx.g.tensors[op.inputs[1]]
    if k.data is None:
        raise NotBuildable("a kernel computed at run time: SOFIE's ConvTranspose reads a weight")
    arr = np.flip(np.transpose(np.asarray(k.data), (d, d + 1, *range(d))), tuple(range(2, d + 2)))
    dil = [int(r) for r in op.rhs_dilation]
    full_k = [(kk - 1) * r + 1 for kk, r in zip(ksizes, dil)]
    if set(dil) != {1}:
        holes = np.zeros(arr.shape[:2] + tuple(full_k), arr.dtype)
        holes[(slice(None), slice(None), *(slice(None, None, r) for r in dil))] = arr
        arr = holes
    w = ctx.weight(k.name, arr, f"{k.name}_transposed_kernel")
    reach = [kk - 1 for kk in full_k]
    begin = [r - lo for r, (lo, _) in zip(reach, op.padding)]
    end = [r - hi for r, (_, hi) in zip(reach, op.padding)]
    sym = [max(0, min(a, c)) for a, c in zip(begin, end)]
    full = [s * (i - 1) + r + 1 - 2 * p for s, i, r, p in zip(op.lhs_dilation, spatial, reach, sym)]
    y = ctx.fresh("conv_transpose")
    ctx.add(ctx.sofie.ROperator_ConvTranspose["float"]("NOTSET", [1] * d, 1, full_k, [0] * d, [], sym + sym,
                                                        list(op.lhs_dilation), x, w, "", y), [x, w], [y],
            (n, cout, *full))
    y = crop(ctx, y, (n, cout, *full), [0, 0] + [p - a for a, p in zip(begin, sym)],
             [0, 0] + [p - c for c, p in zip(end, sym)])
    lo = [max(0, p - a) for a, p in zip(begin, sym)]
    y = pad(ctx, y, ctx.shape(y), [0, 0] + lo, [0, 0] + [max(0, p - c) for c, p in zip(end, sym)])
    shape = ctx.shape(y)
    spec = {a + 2: (0, shape[a + 2], t) for a, t in enumerate(op.strides) if t != 1}
    return strided_slice(ctx, y, shape, spec) if spec else y


def _conv_bias(ctx, stages, cout, out):
    """A leading `+ weight` with one value per output channel: the Conv's own bias input."""
    first = stages[0] if stages else None
    if (first is not None and first.kind == "add" and len(first.inputs) == 1
            and ctx.g.tensors[first.inputs[0]].data is not None
            and operand_kind(ctx.g, first.inputs[0], out) == "channel"):
        stages.pop(0)
        t = ctx.g.tensors[first.inputs[0]]
        return ctx.weight(t.name, np.asarray(t.data).reshape(cout), f"{t.name}_bias")
    return None


def _stage(ctx, stage, y, out, d):
    """One epilogue stage on the NCHW value `y`: operands laid out NCHW too."""
    xs = []
    for a in stage.args:
        if a is None:
            xs.append(y)
        elif isinstance(a, Scalar):
            xs.append(ctx.const(np.float32(a.value), "scalar"))
        elif operand_kind(ctx.g, a, out) == "full":
            xs.append(ctx.transpose(ctx.value(a), to_first(d)))
        elif ctx.g.tensors[a].data is not None:
            t = ctx.g.tensors[a]
            xs.append(ctx.weight(a, np.asarray(t.data).reshape((1, t.size) + (1,) * d), f"{a}_nchw"))
        else:
            xs.append(ctx.reshape(ctx.value(a), (1, ctx.g.tensors[a].size) + (1,) * d))
    if stage.kind in COMPOSED:
        return COMPOSED[stage.kind](ctx, stage, *xs)
    return unary(ctx, stage.kind, *xs) if len(xs) == 1 else binary(ctx, stage.kind, *xs)


# -- pooling ------------------------------------------------------------------------------------

@builds(Pool)
def _pool(ctx, op):
    """MaxPool / AveragePool over the windowed axes, moved last behind one N and one C axis (SOFIE's
    pools are NCHW): a min is a max of negated values, a sum an average times the window size."""
    x = ctx.g.tensors[op.inputs[0]]
    if x.dtype != "float32" or op.kind not in ("max", "min", "sum"):
        raise NotBuildable(f"a {op.kind} window reduction over {x.dtype}: SOFIE pools float max and average")
    if set(op.base_dilation) != {1} or set(op.window_dilation) != {1}:
        raise NotBuildable("a dilated window reduction")
    r = len(x.shape)
    pooled = [k for k in range(r) if op.window[k] != 1 or op.strides[k] != 1 or tuple(op.padding[k]) != (0, 0)]
    rest = [k for k in range(r) if k not in pooled]
    if not 1 <= len(pooled) <= 3:
        raise NotBuildable(f"a window over {len(pooled)} of {r} axes: SOFIE's Pool takes 1 to 3 spatial axes")
    lead = [x.shape[k] for k in rest]
    if any(isinstance(n, Sym) for n in lead[1:]):
        raise NotBuildable("a window reduction with the batch in a channel axis")
    # the first other axis is N, the rest fold into C (none: a unit N and C)
    nc = (lead[0], int(np.prod(lead[1:], dtype=np.int64))) if lead else (1, 1)
    v = ctx.transpose(ctx.value(x.name), rest + pooled)
    v = ctx.reshape(v, nc + tuple(x.shape[k] for k in pooled))
    if op.kind == "min":
        v = unary(ctx, "neg", v)
    lo, hi = [op.padding[k][0] for k in pooled], [op.padding[k][1] for k in pooled]
    if op.kind != "sum" and all(max(op.padding[k]) < op.window[k] for k in pooled):
        # max/min: SOFIE's MaxPool pads are not skipped, and a -inf fill does not compile; every
        # window reaching into the padding holds the edge element, so copies of it change nothing
        v = crop(ctx, v, ctx.shape(v), [0, 0] + [min(0, a) for a in lo], [0, 0] + [min(0, c) for c in hi])
        v = edge_pad(ctx, v, ctx.shape(v), [0, 0] + [max(0, a) for a in lo], [0, 0] + [max(0, c) for c in hi])
        sym = [0] * len(pooled)
    elif op.kind != "sum":   # a window wholly in the padding: -FLT_MAX where XLA has -inf
        raise NotBuildable("a max/min pool whose padding is as wide as its window (SOFIE cannot write the "
                           "-inf it pads with): use route=\"onnx\" or the project's own C++")
    else:
        v, sym = _edges(ctx, v, ctx.shape(v), lo, hi, 0.0)
    s = ctx.sofie
    attr = s.RAttributes_Pool()
    attr.kernel_shape = [int(op.window[k]) for k in pooled]
    attr.strides = [int(op.strides[k]) for k in pooled]
    attr.pads = sym + sym
    attr.dilations = [1] * len(pooled)
    attr.ceil_mode, attr.count_include_pad, attr.auto_pad = 0, 1, "NOTSET"
    out = ctx.g.tensors[op.outputs[0]].shape
    y = ctx.fresh("pool")
    mode = s.PoolOpMode.AveragePool if op.kind == "sum" else s.PoolOpMode.MaxPool
    y = ctx.add(s.ROperator_Pool["float"](mode, attr, v, y), [v], [y], nc + tuple(out[k] for k in pooled))
    if op.kind == "min":
        y = unary(ctx, "neg", y)
    if op.kind == "sum":
        y = binary(ctx, "mul", y, ctx.const(np.float32(np.prod(attr.kernel_shape)), "window_size"))
    y = ctx.reshape(y, tuple(x.shape[k] for k in rest) + tuple(out[k] for k in pooled))
    y = ctx.transpose(y, [(rest + pooled).index(k) for k in range(r)])
    if op.init is not None:
        combine = {"max": "max", "min": "min", "sum": "add"}[op.kind]
        y = binary(ctx, combine, y, ctx.const(np.float32(op.init), "init"))
    return [y]
