"""Backend-neutral graph passes on the IR. Each is a named function of the graph; `run_passes(g,
disable=...)` switches any off by name to debug a conversion (`convert(..., disable_passes=[...])`)."""
from __future__ import annotations

from ..ir.graph import graphs
from .conv import fold_conv_padding, fuse_conv_epilogue
from .fusion import fuse_activation, fuse_elementwise, fuse_gemm_bias, fuse_softmax, materialize_outputs
from .layout import sink_transposes

PASSES = {
    "sink_transposes": sink_transposes,   # first: the fusions below match the NHWC chains it leaves
    "fuse_gemm_bias": fuse_gemm_bias,
    "fuse_softmax": fuse_softmax,
    "fuse_activation": fuse_activation,
    "fold_conv_padding": fold_conv_padding,
    "fuse_conv_epilogue": fuse_conv_epilogue,
    "fuse_elementwise": fuse_elementwise,   # after every pass that looks for single elementwise ops
}


def run_passes(g, disable=(), backend_steps=()) -> None:
    """Each pass runs on every sub-graph too; the operators owning them then re-list the outer
    tensors their sub-graphs read (`refresh`), so the parent's use counts stay right.
    `backend_steps` names the steps a backend runs afterwards (cpp/prepare.py), which `disable`
    may name too."""
    unknown = set(disable) - set(PASSES) - set(backend_steps)
    if unknown:
        raise ValueError(f"unknown pass(es) {sorted(unknown)}; available: {sorted({*PASSES, *backend_steps})}")
    for name, fn in PASSES.items():
        if name not in disable:
            for sub in graphs(g):
                fn(sub)
                for op in sub.ops:
                    op.refresh()
    g.remove_unused()
    materialize_outputs(g)
    g.remove_unused()
