"""conv_general_dilated -> Conv in the canonical channels-last layout (see sofie/ops/conv.py).

Operands are brought to that layout first: a weight kernel is permuted with numpy at conversion
time (no run-time cost), a run-time operand through a Transpose operator; the output is
transposed back only when the requested layout differs.
"""
from __future__ import annotations

import jax
import numpy as np
from jax import lax

from ..ir.ops.conv import Conv
from ..ir.ops.movement import Reshape, Transpose
from ..values import Const, Unsupported
from . import handles, out_aval
from .cases import Case, f32


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


# -- test cases -----------------------------------------------------------------------------------

def _conv(strides=None, padding="SAME", dn=("NHWC", "HWIO", "NHWC"), **kw):
    def fn(params, x):
        k = params["kernel"]
        return lax.conv_general_dilated(x, k, strides or (1,) * (x.ndim - 2), padding,
                                        dimension_numbers=dn, **kw)
    return fn


def _conv_rt(strides=None, padding="SAME", dn=("NHWC", "HWIO", "NHWC"), **kw):
    """The kernel as a run-time input, not a weight."""
    def fn(x, k):
        return lax.conv_general_dilated(x, k, strides or (1,) * (x.ndim - 2), padding,
                                        dimension_numbers=dn, **kw)
    return fn


def jax_relu(v):
    return lax.max(v, lax.full_like(v, 0.0))


def _kernel_param(*shape):
    return {"kernel": f32(*shape, scale=0.3)}


_C = ("conv_general_dilated",)


def _cnn_loss(p, x):
    """Conv + bias + relu + max pool + strided conv + dense: its gradient needs the transposed
    convolutions (lhs dilation, swapped kernel dims) and select_and_scatter_add."""
    dn = ("NHWC", "HWIO", "NHWC")
    y = jax_relu(lax.conv_general_dilated(x, p["k"], (1, 1), "SAME", dimension_numbers=dn) + p["b"])
    y = lax.reduce_window(y, -np.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    y = lax.conv_general_dilated(y, p["k2"], (2, 2), "SAME", dimension_numbers=dn)
    return ((y.reshape(y.shape[0], -1) @ p["w"]) ** 2).sum()


_CNN = {"k": f32(3, 3, 2, 4, scale=0.3), "b": f32(4), "k2": f32(3, 3, 4, 3, scale=0.3), "w": f32(12, 2)}

CASES = [
    Case("conv1d_nwc_same", _conv(dn=("NWC", "WIO", "NWC")), (f32(2, 9, 3, scale=0.5),), _C,
         params=_kernel_param(3, 3, 4)),
    Case("conv1d_ncw_stride2_valid", _conv((2,), "VALID", dn=("NCW", "OIW", "NCW")), (f32(2, 3, 11, scale=0.5),), _C,
         params=_kernel_param(5, 3, 4)),
    Case("conv2d_nhwc_same", _conv(), (f32(1, 6, 6, 3, scale=0.5),), _C, params=_kernel_param(3, 3, 3, 4),
         ops=("Conv",)),
    Case("conv2d_nchw_stride2_valid", _conv((2, 2), "VALID", dn=("NCHW", "OIHW", "NCHW")),
         (f32(2, 3, 7, 7, scale=0.5),), _C, params=_kernel_param(4, 3, 3, 3)),
    Case("conv2d_nchw_same_stride2", _conv((2, 2), "SAME", dn=("NCHW", "OIHW", "NCHW")),
         (f32(1, 2, 6, 5, scale=0.5),), _C, params=_kernel_param(3, 2, 3, 3)),
    Case("conv2d_mixed_layouts", _conv((1, 2), "SAME", dn=("NCHW", "HWIO", "NHWC")),
         (f32(2, 3, 5, 6, scale=0.5),), _C, params=_kernel_param(2, 3, 3, 4)),
    Case("conv2d_explicit_padding", _conv((2, 1), ((2, 0), (1, 3))), (f32(1, 6, 5, 2, scale=0.5),), _C,
         params=_kernel_param(3, 2, 2, 3)),
    # Negative padding crops. Not mixed with positive padding in one dimension: XLA CPU itself
    # returns garbage for e.g. (-1, 1) (jax 0.10.2), so JAX cannot serve as the reference there.
    Case("conv2d_negative_padding", _conv((1, 1), ((0, 1), (-1, 0))), (f32(1, 6, 7, 2, scale=0.5),), _C,
         params=_kernel_param(2, 3, 2, 3)),
    Case("conv2d_crop_both_sides", _conv((1, 2), ((-1, -1), (-2, 0))), (f32(1, 6, 7, 2, scale=0.5),), _C,
         params=_kernel_param(2, 2, 2, 3)),
    Case("conv2d_rhs_dilation", _conv((1, 1), "SAME", rhs_dilation=(2, 2)), (f32(1, 7, 7, 2, scale=0.5),), _C,
         params=_kernel_param(3, 3, 2, 3)),
    Case("conv2d_lhs_dilation", _conv((1, 1), ((1, 2), (2, 1)), lhs_dilation=(2, 2)),
         (f32(1, 4, 4, 3, scale=0.5),), _C, params=_kernel_param(3, 3, 3, 2)),
    Case("conv2d_transpose_stride2",
         lambda p, x: lax.conv_transpose(x, p["kernel"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
         (f32(2, 4, 3, 3, scale=0.5),), _C, params=_kernel_param(3, 3, 3, 4)),
    Case("conv2d_groups2", _conv(feature_group_count=2), (f32(1, 5, 5, 4, scale=0.5),), _C,
         params=_kernel_param(3, 3, 2, 6)),
    Case("conv2d_groups3_nchw_stride2", _conv((2, 2), "VALID", dn=("NCHW", "OIHW", "NCHW"), feature_group_count=3),
         (f32(2, 6, 7, 6, scale=0.5),), _C, params=_kernel_param(6, 2, 3, 3)),
    Case("conv2d_depthwise", _conv(feature_group_count=4), (f32(2, 6, 6, 4, scale=0.5),), _C,
         params=_kernel_param(3, 3, 1, 4)),
    Case("conv2d_depthwise_multiplier2_stride2", _conv((2, 2), "SAME", feature_group_count=3),
         (f32(1, 7, 6, 3, scale=0.5),), _C, params=_kernel_param(3, 3, 1, 6)),
    Case("conv2d_depthwise_nchw", _conv((1, 1), "VALID", dn=("NCHW", "OIHW", "NCHW"), feature_group_count=3),
         (f32(1, 3, 5, 5, scale=0.5),), _C, params=_kernel_param(3, 1, 3, 3)),
    Case("conv2d_1x1", _conv((1, 1), "VALID"), (f32(2, 4, 5, 6, scale=0.5),), _C, params=_kernel_param(1, 1, 6, 3)),
    Case("conv2d_1x1_nchw", _conv((1, 1), "VALID", dn=("NCHW", "OIHW", "NCHW")), (f32(2, 6, 3, 4, scale=0.5),), _C,
         params=_kernel_param(5, 6, 1, 1)),
    Case("conv2d_1x1_stride2", _conv((2, 2), "VALID"), (f32(1, 5, 5, 3, scale=0.5),), _C,
         params=_kernel_param(1, 1, 3, 2)),
    Case("conv2d_single_channel", _conv(), (f32(2, 5, 6, 1, scale=0.5),), _C, params=_kernel_param(3, 3, 1, 4)),
    Case("conv2d_runtime_kernel", _conv_rt((2, 1), "SAME"), (f32(1, 5, 6, 3, scale=0.5), f32(3, 2, 3, 4, scale=0.3)), _C),
    Case("conv2d_runtime_kernel_nchw_groups2", _conv_rt((1, 1), "SAME", dn=("NCHW", "OIHW", "NCHW"),
                                                         feature_group_count=2),
         (f32(1, 4, 5, 5, scale=0.5), f32(6, 2, 3, 3, scale=0.3)), _C),
    Case("conv2d_runtime_kernel_depthwise", _conv_rt(feature_group_count=3),
         (f32(1, 5, 5, 3, scale=0.5), f32(3, 3, 1, 3, scale=0.3)), _C),
    Case("conv2d_batched_chunks", _conv(), (f32(4, 16, 16, 8, scale=0.3),), _C, params=_kernel_param(3, 3, 8, 8)),
    Case("conv3d_ndhwc_explicit_padding", _conv((1, 2, 1), ((1, 0), (0, 2), (1, 1)), dn=("NDHWC", "DHWIO", "NDHWC")),
         (f32(1, 4, 5, 4, 2, scale=0.5),), _C, params=_kernel_param(2, 3, 2, 2, 3)),
    Case("conv3d_ncdhw_same", _conv(dn=("NCDHW", "OIDHW", "NCDHW")), (f32(1, 2, 3, 4, 4, scale=0.5),), _C,
         params=_kernel_param(3, 2, 2, 3, 2)),
    # The fast paths: what follows a convolution per element runs in its epilogue (one Conv
    # operator), a per-channel scale folds into the kernel, a zero Pad becomes its padding.
    Case("conv2d_bias_relu", lambda p, x: jax_relu(lax.conv_general_dilated(
        x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]),
         (f32(1, 5, 5, 3, scale=0.5),), _C + ("add", "max"),
         params={"kernel": f32(3, 3, 3, 4, scale=0.3), "bias": f32(4, scale=0.1)}, ops=("Conv",), no_ops=("Add", "Relu")),
    Case("conv2d_batchnorm_relu6", lambda p, x: jax.nn.relu6(lax.conv_general_dilated(
        x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) * p["scale"] + p["shift"]),
         (f32(2, 6, 6, 8, scale=0.5),), _C + ("mul", "add"),
         params={"kernel": f32(3, 3, 8, 8, scale=0.3), "scale": f32(8, low=0.5, high=1.5), "shift": f32(8, scale=0.1)},
         ops=("Conv",), no_ops=("Mul", "Add", "Relu", "Min", "Max")),
    Case("conv2d_depthwise_bias_relu6_residual", lambda p, x: x + jax.nn.relu6(lax.conv_general_dilated(
        x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=40)
        + p["bias"]),
         (f32(1, 7, 9, 40, scale=2.0),), _C + ("add",),
         params={"kernel": f32(3, 3, 1, 40, scale=0.5), "bias": f32(40, scale=0.5)}, ops=("Conv",),
         no_ops=("Add", "Relu", "Min")),
    Case("conv2d_1x1_bias_tanh_packed", lambda p, x: jax.numpy.tanh(lax.conv_general_dilated(
        x, p["kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]),
         (f32(2, 3, 5, 20, scale=0.5),), _C + ("add", "tanh"),
         params={"kernel": f32(1, 1, 20, 37, scale=0.3), "bias": f32(37, scale=0.1)}, ops=("Conv",), no_ops=("Add", "Tanh")),
    Case("conv2d_zero_pad_folded", lambda p, x: lax.conv_general_dilated(
        jax.numpy.pad(x, ((0, 0), (0, 1), (2, 1), (0, 0))), p["kernel"], (2, 2), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=5),
         (f32(1, 8, 7, 5, scale=0.5),), _C + ("pad",), params=_kernel_param(3, 3, 1, 5), ops=("Conv",), no_ops=("Pad",)),
    Case("conv2d_first_layer_direct_dynamic", lambda p, x: jax_relu(lax.conv_general_dilated(
        x, p["kernel"], (2, 2), ((0, 1), (0, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]),
         (f32(3, 9, 8, 3, scale=0.5),), _C + ("add", "max"),
         params={"kernel": f32(3, 3, 3, 19, scale=0.3), "bias": f32(19, scale=0.1)}, ops=("Conv",), no_ops=("Add",),
         batch="dynamic"),
    Case("conv2d_pointwise_residual_dynamic", lambda p, x: x + lax.conv_general_dilated(
        x, p["kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) * p["scale"],
         (f32(2, 4, 3, 24, scale=0.5),), _C + ("add", "mul"),
         params={"kernel": f32(1, 1, 24, 24, scale=0.3), "scale": f32(24, low=0.5, high=1.5)}, ops=("Conv",),
         no_ops=("Add", "Mul"), batch="dynamic"),
    # channels-first: the Transposes around each convolution sink and cancel (sink_transposes), so
    # the bias and relu still reach the epilogue, and the pool runs on the channels-last tensor
    Case("conv2d_nchw_bias_relu_pool", lambda p, x: lax.reduce_window(jax_relu(lax.conv_general_dilated(
        x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")) + p["bias"]),
        -np.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"),
         (f32(2, 3, 6, 4, scale=0.5),), _C + ("add", "max", "reduce_window_max"),
         params={"kernel": f32(5, 3, 3, 3, scale=0.3), "bias": f32(1, 5, 1, 1, scale=0.1)}, ops=("Conv", "MaxPool"),
         no_ops=("Add", "Relu", "Max")),
    Case("grad_cnn_maxpool_wrt_input", jax.grad(_cnn_loss, argnums=1), (f32(2, 8, 8, 2),),
         _C + ("select_and_scatter_add",), params=_CNN, atol=1e-4),
    Case("grad_cnn_maxpool_wrt_params", jax.grad(_cnn_loss), (f32(2, 8, 8, 2),), _C + ("select_and_scatter_add",),
         params=_CNN, atol=1e-4),
]
