"""The C++ backend's own preparation of a converted graph: which weights the header reads packed in
panels of columns (kernels.gemm_packed), and whether intermediates share buffers.

Each step is named and switchable like a pass (`convert(..., disable_passes=[...])`). They only
annotate the graph (`Tensor.packed`, `Conv.packed`, `Graph.reuse_buffers`) and never change a
value: a weight keeps its logical layout in `data`, which the ONNX export writes as it is; the
panels exist only in the weight file and the Session (weights.stored).
"""
from __future__ import annotations

from ..ir.graph import graphs
from ..ir.ops.conv import Conv
from ..ir.ops.linalg import MatMul
from . import winograd


def _matmul_layout(g, op, k):
    """A dense product's B (input 1) as panels: (K, N, transposed)."""
    if type(op) is MatMul and k == 1 and op.batch == 1 and not op.trans_a \
            and (len(op.inputs) < 3 or g.tensors[op.inputs[2]].size == op.n):
        return op.k, op.n, op.trans_b
    return None


def _conv_layout(g, op, k):
    """The kernel of a convolution that runs as one GEMM (1x1, or im2col without groups):
    [taps x Cin, Cout] as panels; of one Winograd's F(2x2, 3x3) computes (winograd.fits): its 16
    transformed [Cin, Cout] matrices as panels."""
    if not (isinstance(op, Conv) and k == 1):
        return None
    if winograd.fits(op, g):
        shape = g.tensors[op.inputs[1]].shape
        return shape[-2], shape[-1], False, winograd.LAYOUT
    algorithm = op.algorithm(g)
    if not (algorithm == "pointwise" or (algorithm in ("im2col", "implicit") and op.groups == 1)):
        return None
    shape = g.tensors[op.inputs[1]].shape
    taps = 1
    for d in shape[:-1]:
        taps *= d
    return taps, shape[-1], False


def _pack(g, layout_of) -> list:
    """Mark every float32 weight whose readers (over the whole model: sub-graphs share the tensor
    table) all read it in one panel layout; returns the (reader, k) pairs of the weights marked."""
    readers = {}
    for sub in graphs(g):
        for op in sub.ops:
            for k, name in enumerate(op.inputs):
                readers.setdefault(name, []).append((op, k))
    marked = []
    for name, uses in readers.items():
        t = g.tensors[name]
        if t.kind != "weight" or t.dtype != "float32" or t.packed or name in g.outputs or t.size == 0:
            continue
        layouts = {layout_of(g, op, k) for op, k in uses}
        if len(layouts) == 1 and None not in layouts:
            t.packed = layouts.pop()
            marked += uses
    return marked


def pack_weights(g) -> None:
    """A weight matrix that only dense products read is stored packed in panels of columns, the
    layout kernels.gemm_packed reads contiguously (the weight file holds it that way)."""
    _pack(g, _matmul_layout)


def pack_conv_kernels(g) -> None:
    """The weight kernel of a convolution that runs as one GEMM, stored in the panels
    detail::gemm_packed reads; the Conv then calls the packed product, the implicit-GEMM kernel
    (conv_implicit.py) or Winograd's (winograd.py, on the transformed kernel)."""
    for conv, _ in _pack(g, _conv_layout):
        conv.packed = tuple(g.tensors[conv.inputs[1]].shape)
        if winograd.is_transformed(g.tensors[conv.inputs[1]]):
            conv.winograd = winograd.tiles_per_pass(conv, g)
        g.refresh_scratch(conv)   # Winograd's buffers, or none (implicit GEMM) instead of im2col's


def reuse_buffers(g) -> None:
    """Let intermediates whose lifetimes do not overlap share storage (see memory.buffer_plan)."""
    for sub in graphs(g):
        sub.reuse_buffers = True


# run once on the whole model, in this order, after the backend-neutral passes
PREPARATION = {
    "pack_conv_kernels": pack_conv_kernels,
    "pack_weights": pack_weights,
    "reuse_buffers": reuse_buffers,
}


def prepare(g, disable=()) -> None:
    for name, fn in PREPARATION.items():
        if name not in disable:
            fn(g)
