"""conv_general_dilated -> Conv in the canonical channels-last layout (see ir/ops/conv.py).

Operands are brought to that layout first: a weight kernel is permuted with numpy at conversion
time (no run-time cost), a run-time operand through a Transpose operator; the output is
transposed back only when the requested layout differs.
"""
from __future__ import annotations

import numpy as np
from jax import lax

from ..ir.ops.conv import Conv
from ..ir.ops.movement import Reshape, Transpose
from ..values import Const, Unsupported
from . import handles, out_aval


def _arrange(ctx, v, perm, split_shape=None, hint="transpose"):
    """`v` reshaped to `split_shape` (a view that only splits one axis) then permuted by `perm`."""
    shape = ctx.shape(v)
    split_shape = tuple(split_shape or shape)
    perm = tuple(perm)
    if isinstance(v, Const):
        cache = v.__dict__.setdefault("conv_layouts", {})
        key = (split_shape, perm)
        if key not in cache:   # one weight shared by several convolutions is stored once
            arr = np.ascontiguousarray(np.transpose(v.array.reshape(split_shape), perm))
            cache[key] = Const(arr, v.hint)
        return cache[key]
    name = ctx.tensor(v)
    if split_shape != tuple(shape):
        name = ctx.add(Reshape([name], shape=split_shape), hint="reshape")
    if perm != tuple(range(len(perm))):
        name = ctx.add(Transpose([name], perm=perm), hint=hint)
    return name


def _kernel(ctx, k, rhs_spec, groups, grouped):
    """JAX kernel (any layout) -> [K..., Cg, Cout], or [G, K..., Cg, Og] when `grouped`."""
    o_ax, i_ax, spatial = rhs_spec[0], rhs_spec[1], list(rhs_spec[2:])
    if not grouped:
        return _arrange(ctx, k, (*spatial, i_ax, o_ax), hint="kernel")
    ks = ctx.shape(k)
    # Split the output-feature axis into (group, feature within group); axes after it shift by one.
    split = ks[:o_ax] + (groups, ks[o_ax] // groups) + ks[o_ax + 1:]
    moved = lambda a: a if a < o_ax else a + 1
    return _arrange(ctx, k, (o_ax, *map(moved, spatial), moved(i_ax), o_ax + 1), split, hint="kernel")


@handles(lax.conv_general_dilated_p, params=(
        "window_strides", "padding", "lhs_dilation", "rhs_dilation", "dimension_numbers",
        "feature_group_count", "batch_group_count", "preferred_element_type",
        "precision"))   # knowingly ignored: the generated code always computes in float32
def _conv_general_dilated(ctx, eqn, lhs, rhs):
    p = eqn.params
    if p["batch_group_count"] != 1:
        raise Unsupported(f"batch_group_count={p['batch_group_count']} (a weight-gradient convolution): "
                          "only batch_group_count=1 is supported")
    pet = p.get("preferred_element_type")
    if pet is not None and np.dtype(pet) != np.float32:
        raise Unsupported(f"convolution accumulating in {np.dtype(pet).name}: only float32 is supported")
    for v in (lhs, rhs):
        if ctx.dtype(v) != "float32":
            raise Unsupported(f"convolution of {ctx.dtype(v)} tensors: only float32 is supported; "
                              "cast input and kernel to float32")
    padding = p["padding"]
    if isinstance(padding, str):
        raise Unsupported(f"padding given as {padding!r}: expected explicit (low, high) pairs in the jaxpr")
    lhs_spec, rhs_spec, out_spec = (tuple(int(a) for a in s) for s in p["dimension_numbers"])
    groups = int(p["feature_group_count"])
    cin = ctx.shape(lhs)[lhs_spec[1]]
    grouped = groups > 1 and cin // groups > 1
    x = _arrange(ctx, lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]), hint="to_channels_last")
    k = _kernel(ctx, rhs, rhs_spec, groups, grouped)
    op = Conv([ctx.tensor(x), ctx.tensor(k)],
              strides=tuple(int(s) for s in p["window_strides"]),
              padding=tuple((int(lo), int(hi)) for lo, hi in padding),
              lhs_dilation=tuple(int(d) for d in p["lhs_dilation"]),
              rhs_dilation=tuple(int(d) for d in p["rhs_dilation"]),
              groups=groups)
    y = ctx.add(op, hint="conv")
    # Canonical axis j holds output axis canon[j]; bring every axis back to where out_spec puts it.
    canon = (out_spec[0], *out_spec[2:], out_spec[1])
    perm = tuple(canon.index(a) for a in range(len(canon)))
    if perm != tuple(range(len(perm))):
        y = ctx.add(Transpose([y], perm=perm), hint="conv_out")
    want = tuple(out_aval(eqn).shape)
    if ctx.shape(y) != want:
        raise Unsupported(f"conv output shape {ctx.shape(y)} differs from JAX's {want}: "
                          "an unexpected combination of padding and dilation")
    return y
