"""Convolutions as calls of the run-time-sized kernels of conv_kernels.py: direct loops for
depthwise convolutions (one input channel per output channel), where im2col + GEMM would waste its
time copying, and the im2col matrix of the others. Each call site only fills a ConvShape: the loops
themselves are compiled once per header, however many layers call them. The one exception is a
first layer with very few input channels (conv_loops.py).
"""
from __future__ import annotations

from ..conv_kernels import shape_literal
from .conv_loops import emit_direct as emit_direct_loops
from .epilogue import bias_clamp, epilogue_stages


def conv_shape(op, g) -> str:
    """The C++ ConvShape of a Conv operator."""
    n, spatial, cin, ksizes, _, cout = op.dims(g)
    wins = op.windows(g)
    return shape_literal(n, spatial, [win.out for win in wins], ksizes, [win.stride for win in wins],
                         [win.lo for win in wins], [win.window_dilation for win in wins],
                         [win.base_dilation for win in wins], cin, cout)


def _kernel_call(op, w, g, kernel: str, helpers, extra=()) -> None:
    """A call of run-time-sized convolution kernel `kernel` (x, k, y, `extra`, then its finishing
    stage): the epilogue applied to the accumulators as they are stored, a BiasClamp (none at all
    is one) in the widest vector tier the CPU has, any other in the build's own."""
    for helper in ("conv", *helpers):
        w.need(helper)
    out_shape = g.tensors[op.outputs[0]].shape
    stages = bias_clamp(w, g, op.epilogue, out_shape) or epilogue_stages(w, g, op.epilogue, out_shape)
    args = [w.ref(t) for t in (op.inputs[0], op.inputs[1], op.outputs[0])] + list(extra)
    w.line(f"detail::{kernel}({conv_shape(op, g)}, {', '.join(args)}, {stages});")


def emit_direct(op, w, g, depthwise: bool) -> None:
    """out[n, o, oc] = sum over real taps t (and input channels ci) of x[n, o*s + t*d - lo, ci] *
    k[t, ci, oc]; `depthwise`: ci = oc and the kernel is [K..., 1, C] (conv_kernels.py)."""
    if not depthwise:
        emit_direct_loops(op, w, g, depthwise=False)
        return
    _kernel_call(op, w, g, "conv_depthwise", ())


def emit_implicit(op, w, g) -> None:
    """The implicit GEMM (conv_implicit.py) on the packed kernel."""
    _kernel_call(op, w, g, "conv_implicit", ("gemm_packed", "conv_implicit"))


def emit_winograd(op, w, g) -> None:
    """Winograd's F(2x2, 3x3) (winograd.py) on the transformed kernel the weight file holds, with
    its scratch buffers and tiles per pass."""
    buffers = [w.ref(op.scratch_names[key]) for key in ("wino_in", "wino_out")]
    _kernel_call(op, w, g, "conv_winograd", ("gemm_packed", "winograd"), [*buffers, str(op.winograd)])


def emit_im2col(op, w, g, col: str, n0: str, nb, c0: str, cg) -> None:
    """Fill `col` with the im2col rows of `nb` images from image `n0`, input channels c0..c0+cg."""
    w.need("conv")
    w.line(f"detail::im2col({conv_shape(op, g)}, {w.ref(op.inputs[0])}, {col}, {n0}, {nb}, {c0}, {cg});")
