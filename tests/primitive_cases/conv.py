"""Test cases of the conv primitive rules (jaxpr2sofie/primitives/conv.py)."""
from __future__ import annotations

import jax
import numpy as np
from jax import lax

from . import Case, f32


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
