"""Conv (channels-last, HWIO-style kernels) -> ONNX Conv / ConvTranspose (NCHW, OIHW), Pool, and
the max-pool gradient SelectAndScatterAdd (a per-tap selection, then one ScatterND add).

Transposes go around each convolution; the builder folds back-to-back transposes, so a chain of
convolutions keeps NCHW in between. Weights are permuted at export time. SOFIE's parser averages
asymmetric convolution padding, so asymmetric padding becomes an explicit Pad node; for SOFIE
(target="sofie") a dilated kernel is written out with its zeros (`_dilated_kernel`).
"""
from __future__ import annotations

import numpy as np

from types import SimpleNamespace

from ..ir.ops.base import Scalar
from ..ir.ops.conv import Conv
from ..ir.ops.epilogue import operand_kind
from ..ir.ops.pool import Pool, SelectAndScatterAdd
from .builder import NotExportable, exports, symbolic
from .elementwise import _apply

MAX_TAPS = 256   # a pooling window the generic (slice per tap) form writes out node by node


def _to_first(d):
    return (0, d + 1, *range(1, d + 1))


def _to_last(d):
    return (0, *range(2, d + 2), 1)


def _oihw(b, op, d):
    """The kernel as ONNX wants it: [Cout, Cg, K...]."""
    k = op.inputs[1]
    ks = b.g.tensors[k].shape
    if op.grouped_kernel(b.g):   # [G, K..., Cg, Og] -> [G, Og, Cg, K...] -> [Cout, Cg, K...]
        g, og, cg = ks[0], ks[-1], ks[-2]
        return b.view(k, perm=(0, d + 2, d + 1, *range(1, d + 1)), then=(g * og, cg, *ks[1:-2]))
    return b.view(k, perm=(d + 1, d, *range(d)))


def _dilated_kernel(b, w, dilation):
    """An OIHW kernel with its dilation written out as zeros between the taps. For SOFIE: its Conv
    dilates the kernel into a work buffer whose holes it never zeroes, so a dilated Conv is wrong
    whenever SOFIE's memory pool hands it a buffer an earlier operator wrote."""
    if w in b.inits:   # a weight: dilated now
        arr = b.inits[w]
        k = np.zeros(arr.shape[:2] + tuple((n - 1) * r + 1 for n, r in zip(arr.shape[2:], dilation)), arr.dtype)
        k[(slice(None), slice(None), *(slice(None, None, r) for r in dilation))] = arr
        return b.const(k, "dilated_kernel")
    for axis, r in enumerate(dilation):
        w = b.dilate(w, axis + 2, r)
    return w


def _spatial_padding(b, x, d, lo, hi):
    """Pad/crop the spatial axes of an NC... tensor; returns it and the symmetric part left for Conv."""
    lo, hi = list(lo), list(hi)
    sym = [max(0, min(a, c)) if a == c else 0 for a, c in zip(lo, hi)]
    x = b.pad_or_crop(x, [0, 0] + [a - s for a, s in zip(lo, sym)], [0, 0] + [c - s for c, s in zip(hi, sym)])
    return x, sym


@exports(Conv)
def _conv(b, op):
    n, spatial, cin, ksizes, cg, cout = op.dims(b.g)
    d = len(spatial)
    x = b.transpose(b.value(op.inputs[0]), _to_first(d))
    if any(ld != 1 for ld in op.lhs_dilation):
        y = _conv_transpose(b, op, x, d, ksizes)
    else:
        x, sym = _spatial_padding(b, x, d, [p[0] for p in op.padding], [p[1] for p in op.padding])
        out = b.g.tensors[op.outputs[0]].shape
        w, dil = _oihw(b, op, d), list(op.rhs_dilation)
        if b.target == "sofie" and set(dil) != {1}:
            w, ksizes, dil = _dilated_kernel(b, w, dil), [(k - 1) * r + 1 for k, r in zip(ksizes, dil)], [1] * d
        y = b.node("Conv", [x, w], hint="conv", shape=(n, cout, *out[1:-1]), dtype="float32",
                   kernel_shape=list(ksizes), strides=list(op.strides), dilations=dil,
                   group=op.groups, pads=sym + sym)
        b.biasable[y] = b.nodes[-1]
    return [b.transpose(_epilogue(b, op, y, d), _to_last(d))]


def _epilogue(b, op, y, d):
    """A fused epilogue as the nodes it stands for, after the Conv, in its NCHW layout: a leading
    per-channel weight add is the Conv's own bias input, every other stage one elementwise node."""
    out = b.g.tensors[op.outputs[0]]
    cout = out.shape[-1]
    stages = list(op.epilogue)
    conv = b.biasable.pop(y, None)
    first = stages[0] if stages else None
    if (conv is not None and first is not None and first.kind == "add" and len(first.inputs) == 1
            and b.g.tensors[first.inputs[0]].data is not None
            and operand_kind(b.g, first.inputs[0], out.shape) == "channel"):
        conv.input.append(b.view(first.inputs[0], (cout,)))
        stages.pop(0)
    elif conv is not None and not stages:
        b.biasable[y] = conv
    for s in stages:
        xs = []
        for a in s.args:
            if a is None:
                xs.append(y)
            elif isinstance(a, Scalar):
                xs.append(b.scalar(a.value, a.dtype))
            elif operand_kind(b.g, a, out.shape) == "full":
                xs.append(b.transpose(b.value(a), _to_first(d)))
            elif b.g.tensors[a].data is not None:
                xs.append(b.view(a, (1, b.g.tensors[a].size) + (1,) * d))
            else:
                xs.append(b.reshape(b.value(a), (1, b.g.tensors[a].size) + (1,) * d))
        y = _apply(b, s, xs, SimpleNamespace(dtype="float32"))
    return y


def _conv_transpose(b, op, x, d, ksizes):
    """An input-dilated convolution is a transposed convolution with the kernel flipped:
    ConvTranspose(stride = lhs_dilation) computes the full output, then it is cropped or padded to
    XLA's padding, and subsampled by the window strides."""
    if op.groups != 1:
        raise NotExportable("transposed (input-dilated) convolution with feature groups")
    n, spatial, cin, _, _, cout = op.dims(b.g)
    perm, flip = (d, d + 1, *range(d)), tuple(range(2, d + 2))
    w = b.view(op.inputs[1], perm=perm, flip=flip)
    reach = [(k - 1) * rd for k, rd in zip(ksizes, op.rhs_dilation)]
    begin = [r - lo for r, (lo, _) in zip(reach, op.padding)]
    end = [r - hi for r, (_, hi) in zip(reach, op.padding)]
    sym = [max(0, min(a, c)) for a, c in zip(begin, end)]
    full = [s * (i - 1) + r + 1 - 2 * p for s, i, r, p in zip(op.lhs_dilation, spatial, reach, sym)]
    kshape, dil = list(ksizes), list(op.rhs_dilation)
    if b.target == "sofie" and set(dil) != {1}:   # SOFIE's ConvTranspose is wrong with dilations, as its Conv
        w, kshape, dil = _dilated_kernel(b, w, dil), [r + 1 for r in reach], [1] * d
    y = b.node("ConvTranspose", [x, w], hint="conv_transpose", shape=(n, cout, *full), dtype="float32",
               kernel_shape=kshape, strides=list(op.lhs_dilation), dilations=dil, pads=sym + sym)
    y = b.pad_or_crop(y, [0, 0] + [p - a for a, p in zip(begin, sym)], [0, 0] + [p - c for c, p in zip(end, sym)])
    steps = {k + 2: (0, b.shape(y)[k + 2], s) for k, s in enumerate(op.strides) if s != 1}
    return b.slice(y, steps)


# -- pooling ------------------------------------------------------------------------------------

def _identity(kind, dtype):
    if kind in ("sum", "prod"):
        return 0 if kind == "sum" else 1
    if np.dtype(dtype).kind == "f":
        return -np.inf if kind == "max" else np.inf
    info = np.iinfo(dtype)
    return info.min if kind == "max" else info.max


def _with_init(b, op, y, dtype):
    if op.init is None:
        return y
    combine = {"max": "Max", "min": "Min", "sum": "Add", "prod": "Mul"}[op.kind]
    return b.ew(combine, y, b.scalar(op.init, dtype))


@exports(Pool)
def _pool(b, op):
    x = b.g.tensors[op.inputs[0]]
    native = (x.dtype == "float32" and op.kind in ("max", "min", "sum") and set(op.base_dilation) == {1}
              and (op.kind != "sum" or set(op.window_dilation) == {1} or b.opset >= 19))
    y = _native_pool(b, op, x) if native else _tap_pool(b, op, x)
    return [_with_init(b, op, y, x.dtype)]


def _native_pool(b, op, x):
    """MaxPool / AveragePool over the windowed axes, moved last behind one N and one C axis."""
    r = len(x.shape)
    pooled = [k for k in range(r) if op.window[k] != 1 or op.strides[k] != 1 or op.padding[k] != (0, 0)]
    rest = [k for k in range(r) if k not in pooled]
    if not pooled:
        return _tap_pool(b, op, x)
    # ONNX pools want [N, C, windowed...]: the first other axis is N, the rest fold into C
    lead = [x.shape[k] for k in rest]
    nc = [lead[0], int(np.prod(lead[1:], dtype=np.int64))] if lead else [1, 1]
    v = b.transpose(b.value(x.name), rest + pooled)
    v = b.reshape(v, nc + [x.shape[k] for k in pooled])
    if op.kind == "min":
        v = b.ew("Neg", v)
    lo = [0, 0] + [op.padding[k][0] for k in pooled]
    hi = [0, 0] + [op.padding[k][1] for k in pooled]
    sym = [a if a == c and a >= 0 else 0 for a, c in zip(lo, hi)]
    fill = b.scalar(_identity("max" if op.kind != "sum" else "sum", x.dtype), x.dtype)
    inside = all(max(op.padding[k]) < op.window[k] for k in pooled)   # every window holds a real element
    lo, hi = [a - s for a, s in zip(lo, sym)], [c - s for c, s in zip(hi, sym)]
    if b.target == "sofie" and op.kind != "sum" and set(op.window_dilation) == {1} and inside:
        # SOFIE_TRAPS "Pad with -inf": a window reaching into the padding then holds the edge element
        # too, so copies of the edge change no maximum: the edge is padded with copies of itself
        v = b.pad_or_crop(v, [min(a, 0) for a in lo], [min(c, 0) for c in hi])
        v = b.edge_pad(v, [max(a, 0) for a in lo], [max(c, 0) for c in hi])
    else:
        v = b.pad_or_crop(v, lo, hi, fill)
    out = b.g.tensors[op.outputs[0]].shape
    attrs = dict(kernel_shape=[op.window[k] for k in pooled], strides=[op.strides[k] for k in pooled],
                 pads=sym[2:] + sym[2:])
    if set(op.window_dilation) != {1}:
        attrs["dilations"] = [op.window_dilation[k] for k in pooled]
    shape = nc + [out[k] for k in pooled]
    if op.kind == "sum":
        y = b.node("AveragePool", [v], hint="avg_pool", shape=shape, count_include_pad=1, **attrs)
    else:
        y = b.node("MaxPool", [v], hint="max_pool", shape=shape, **attrs)
    if op.kind == "min":
        y = b.ew("Neg", y)
    y = b.reshape(y, [x.shape[k] for k in rest] + [out[k] for k in pooled])
    y = b.transpose(y, [(rest + pooled).index(k) for k in range(r)])
    if op.kind != "sum":
        return y
    taps = int(np.prod(attrs["kernel_shape"], dtype=np.int64))
    total = b.ew("Mul", y, b.scalar(float(taps), x.dtype))
    b.sums[total] = (taps, lambda: y)   # average pooling (sum / taps) stays one AveragePool
    return total


def _tap_pool(b, op, x):
    """Any window reduction, spelled out: pad and dilate with the reduction's identity, then one
    strided Slice per window tap, combined elementwise. For what MaxPool/AveragePool cannot say
    (integer tensors, products, input dilation)."""
    wins = op.windows(b.g)
    taps = int(np.prod(op.window, dtype=np.int64))
    if taps > MAX_TAPS:
        raise NotExportable(f"{op.op_type} with a {taps}-tap window over {x.dtype} data (at most {MAX_TAPS})")
    fill = b.scalar(_identity(op.kind, x.dtype), x.dtype)
    v = b.value(x.name)
    for axis, win in enumerate(wins):
        v = b.dilate(v, axis, win.base_dilation, fill)
    v = b.pad_or_crop(v, [w.lo for w in wins], [w.hi for w in wins], fill)
    parts = []
    for tap in np.ndindex(*op.window):
        spec = {a: (t * w.window_dilation, t * w.window_dilation + (w.out - 1) * w.stride + 1, w.stride)
                for a, (t, w) in enumerate(zip(tap, wins))}
        parts.append(b.slice(v, {a: s for a, s in spec.items() if s != (0, b.shape(v)[a], 1)}))
    combine = {"max": "Max", "min": "Min", "sum": "Add", "prod": "Mul"}[op.kind]
    y = parts[0]
    for p in parts[1:]:
        y = b.ew(combine, y, p)
    return y


# -- the gradient of max/min pooling ------------------------------------------------------------

@exports(SelectAndScatterAdd)
def _select_and_scatter_add(b, op):
    """Each window picks one operand element and its source value is added there. The pick runs
    tap by tap in the window's row-major order exactly as the C++ loop does: the first real tap is
    taken, a later one replaces the pick unless `select(best, tap)` holds (ge for max: the first
    maximum wins ties; NaNs behave as in the C++). Which taps are real (not padding) is known at
    export time, so only the comparisons are nodes; the picked flat indices feed one ScatterND add
    (a window over padding only picks nothing and adds into a scratch slot sliced off after)."""
    src, x = (b.g.tensors[n] for n in op.inputs)
    if any(symbolic(d) for d in x.shape):
        raise NotExportable(f"{op.op_type} on a tensor of shape {tuple(x.shape)}: static shapes only")
    wins = op.windows(b.g)
    n = x.size
    if src.size == 0:
        return [b.const(np.zeros(x.shape, src.dtype), "zeros")]
    taps = int(np.prod(op.window, dtype=np.int64))
    if taps > MAX_TAPS:
        raise NotExportable(f"{op.op_type} with a {taps}-tap window (at most {MAX_TAPS} are unrolled)")
    v = b.pad_or_crop(b.value(x.name), [w.lo for w in wins], [w.hi for w in wins])
    strides = np.cumprod((1,) + tuple(x.shape[:0:-1]), dtype=np.int64)[::-1]
    outs = np.meshgrid(*[np.arange(w.out) for w in wins], indexing="ij")
    picked = np.zeros(src.shape, bool)          # whether some earlier tap was real: known now
    best = at = None
    compare = "GreaterOrEqual" if op.select == "ge" else "LessOrEqual"
    for tap in np.ndindex(*op.window):
        pos = [o * w.stride + k - w.lo for o, k, w in zip(outs, tap, wins)]
        real = np.logical_and.reduce([(p >= 0) & (p < w.size) for p, w in zip(pos, wins)] + [np.ones(src.shape, bool)])
        if not real.any():
            continue
        flat = np.where(real, sum(p * st for p, st in zip(pos, strides)), n).astype(np.int64)
        spec = {a: (k, k + (w.out - 1) * w.stride + 1, w.stride) for a, (k, w) in enumerate(zip(tap, wins))}
        value = b.slice(v, {a: sp for a, sp in spec.items() if sp != (0, b.shape(v)[a], 1)})
        if best is None:
            best, at = value, b.const(flat, "tap_index")
        elif not (real & picked).any():     # no window has seen a real tap yet where this one is real
            best = b.ew("Where", b.const(real, "tap_first"), value, best)
            at = b.ew("Where", b.const(real, "tap_first"), b.const(flat, "tap_index"), at)
        else:
            first, contested = real & ~picked, real & picked
            take = b.ew("Not", b.ew(compare, best, value, dtype="bool"))
            if not contested.all():
                take = b.ew("And", take, b.const(contested, "tap_contested"))
            if first.any():
                take = b.ew("Or", take, b.const(first, "tap_first"))
            best = b.ew("Where", take, value, best)
            at = b.ew("Where", take, b.const(flat, "tap_index"), at)
        picked |= real
    m = src.size
    zeros = b.const(np.zeros(n + 1, src.dtype), "zeros")
    y = b.node("ScatterND", [zeros, b.reshape(at, (m, 1)), b.reshape(b.value(src.name), (m,))], hint="pool_grad",
               shape=(n + 1,), dtype=src.dtype, reduction="add")
    return [b.reshape(b.slice(y, {0: (0, n, 1)}), x.shape)]
