"""Backend-neutral graph passes on the IR. Each is a named function of the graph; `run_passes(g,
disable=...)` switches any off by name to debug a conversion (`convert(..., disable_passes=[...])`)."""
from __future__ import annotations

from .conv import fold_conv_padding, fuse_conv_epilogue, pack_conv_kernels
from .fusion import (fuse_activation, fuse_elementwise, fuse_gemm_bias, fuse_softmax, materialize_outputs, pack_weights,
                     reuse_buffers)
from .layout import sink_transposes
from ..ir.graph import graphs

PASSES = {
    "sink_transposes": sink_transposes,   # first: the fusions below match the NHWC chains it leaves
    "fuse_gemm_bias": fuse_gemm_bias,
    "fuse_softmax": fuse_softmax,
    "fuse_activation": fuse_activation,
    "fold_conv_padding": fold_conv_padding,
    "fuse_conv_epilogue": fuse_conv_epilogue,
    "pack_conv_kernels": pack_conv_kernels,
    "fuse_elementwise": fuse_elementwise,   # after every pass that looks for single elementwise ops
    "reuse_buffers": reuse_buffers,
}
# passes over the whole model at once (they see every sub-graph themselves)
MODEL_PASSES = {
    "pack_weights": pack_weights,
}


def run_passes(g, disable=()) -> None:
    """Each pass runs on every sub-graph too; the operators owning them then re-list the outer
    tensors their sub-graphs read (`refresh`), so the parent's use counts stay right."""
    unknown = set(disable) - set(PASSES) - set(MODEL_PASSES)
    if unknown:
        raise ValueError(f"unknown pass(es) {sorted(unknown)}; available: {sorted({*PASSES, *MODEL_PASSES})}")
    for name, fn in PASSES.items():
        if name not in disable:
            for sub in graphs(g):
                fn(sub)
                for op in sub.ops:
                    op.refresh()
    g.remove_unused()
    materialize_outputs(g)
    g.remove_unused()
    for name, fn in MODEL_PASSES.items():
        if name not in disable:
            fn(g)
