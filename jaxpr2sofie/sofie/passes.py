"""Graph passes. Each is a named function of the graph; `run_passes(g, disable=...)` switches any off
to debug a conversion."""
from __future__ import annotations

from .ops.elementwise import Elementwise
from .ops.linalg import MatMul
from .ops.movement import Identity


def fuse_gemm_bias(g) -> None:
    """MatMul followed by `+ bias` (bias broadcast over rows) becomes one Gemm, as SOFIE emits it."""
    for add in list(g.ops):
        if not (isinstance(add, Elementwise) and add.kind == "add" and len(add.inputs) == 2
                and all(isinstance(a, str) for a in add.args)):
            continue
        for k in (0, 1):
            mm_out, bias = add.args[k], add.args[1 - k]
            mm = g.producer(mm_out)
            if not (isinstance(mm, MatMul) and len(mm.inputs) == 2 and mm.batch == 1
                    and len(g.consumers(mm_out)) == 1 and mm_out not in g.outputs):
                continue
            b = g.tensors[bias]
            out = g.tensors[add.outputs[0]]
            if b.kind != "weight" or out.shape != g.tensors[mm_out].shape:
                continue
            # bias must be [.., 1, N] (one row for all) or the full [M, N] output
            if not (b.size == mm.n and b.shape[-1:] == out.shape[-1:]) and b.shape != out.shape:
                continue
            mm.inputs.append(bias)
            mm.outputs = [add.outputs[0]]
            g.ops.remove(add)
            break


def materialize_outputs(g) -> None:
    """Every graph output must be a distinct, non-view intermediate: the Session writes outputs
    straight into the caller's memory. Inputs, weights, views and repeats get an Identity copy."""
    base = g.plan()
    seen = set()
    produced = {o for op in g.ops for o in op.outputs}
    for k, name in enumerate(g.outputs):
        t = g.tensors[name]
        if t.kind != "intermediate" or name not in produced or base[name] != name or name in seen:
            (g.outputs[k],) = g.add_op(Identity([name]), hint="output")
        seen.add(g.outputs[k])
    # A view of an output would read memory the caller owns only after `run` returns; fine, but a
    # view *into which an output aliases* cannot happen: outputs are never views (checked above).


PASSES = {
    "fuse_gemm_bias": fuse_gemm_bias,
}


def run_passes(g, disable=()) -> None:
    unknown = set(disable) - set(PASSES)
    if unknown:
        raise ValueError(f"unknown pass(es) {sorted(unknown)}; available: {sorted(PASSES)}")
    for name, fn in PASSES.items():
        if name not in disable:
            fn(g)
    g.remove_unused()
    materialize_outputs(g)
    g.remove_unused()
