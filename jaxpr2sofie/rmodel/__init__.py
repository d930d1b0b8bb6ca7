"""The RModel backend: SOFIE's own model (`sofie.RModel`) built operator by operator through the
`sofie` package's bound `ROperator_*` classes (the "operators" route of `SofieModel.to_rmodel`).

Layout: one rule per operator class (`RULES`, registered with `@builds` in context.py), one module per
family; `Context` is the one place turning our tensor names, dtypes and dimensions into SOFIE's.
Weights are initialized tensors named by their key paths; graph inputs and outputs keep the names
the C++ Session uses; the run-time batch is `Dim("N")` (SOFIE's `Session(file, N)`, `infer(N, x)`).

SOFIE's convolutions and pools read NCHW: transposes go around them and back-to-back transposes
fold. Operators SOFIE has no bound class for (Shape, Range, TopK, Scatter, Einsum, If, Loop reach
SOFIE only through its ONNX parser) have no rule: `build` reports every one at once
(`SofieOperatorsError`) and points to `route="onnx"`. `NO_RULE` says why per operator class.
"""
from __future__ import annotations

import time

from ..errors import SofieOperatorsError
from ..ir.ops.fused import expand
from .context import RULES, Context, NotBuildable, builds, etype, sofie_dim, sofie_module
from . import conv, elementwise, linalg, movement, reduce   # noqa: F401  (registers the rules)

__all__ = ["build", "problems", "RULES", "NO_RULE", "builds", "NotBuildable"]

_ONNX_ONLY = ("SOFIE binds no class for it (its ONNX parser has one): route=\"onnx\"")
# operator classes with no rule here, and why
NO_RULE = {
    "FusedElementwise": "built as its steps (ir.ops.fused.expand): SOFIE has no fused-loop operator",
    "Loop": "SOFIE binds no Loop class (scan, while): route=\"onnx\" (a recurrent cell becomes SOFIE's LSTM/GRU/RNN)",
    "Branch": "SOFIE binds no If class: route=\"onnx\"",
    "TopK": _ONNX_ONLY,
    "Sort": "SOFIE has no sort operator",
    "ArgReduce": "SOFIE binds no ArgMax/TopK class: route=\"onnx\" (TopK with k=1)",
    "Gather": "XLA's general gather has no bound SOFIE form: route=\"onnx\"",
    "Scatter": "SOFIE binds no ScatterND class: route=\"onnx\"",
    "DynamicSlice": "a slice at run-time starts: SOFIE binds no form for it",
    "DynamicUpdateSlice": "SOFIE binds no ScatterND class",
    "SelectAndScatterAdd": "the max-pool gradient: SOFIE binds no ScatterND class",
    "DimValue": "the batch size read as a value: SOFIE binds no Shape class (route=\"onnx\")",
    "Iota": "indices over the run-time batch: SOFIE binds no Range class",
}


def problems(graph) -> list:
    """(operator type, origin, reason) for every operator the operators route cannot build, found
    without building (the class has no rule); a rule may still refuse a configuration at build time."""
    return [(op.op_type, op.origin, NO_RULE.get(type(op).__name__, f"no RModel rule for {type(op).__name__}"))
            for op in expand(graph.ops) if type(op) not in RULES]


def build(graph):
    """`graph` as a `sofie.RModel`; every operator SOFIE cannot take is reported at once."""
    sofie = sofie_module()
    found = problems(graph)
    if found:
        raise SofieOperatorsError(found)
    rm = sofie.RModel(graph.name, time.asctime(time.gmtime()))
    ctx = Context(graph, rm)
    for name in graph.inputs:
        t = graph.tensors[name]
        try:
            rm.add_input_tensor_info(name, etype(t.dtype), [sofie_dim(d) for d in t.shape])
        except NotBuildable as e:
            found.append(("input", name, str(e)))
        rm.add_input_tensor_name(name)
        ctx.env[name] = name
        ctx.meta[name] = (tuple(t.shape), t.dtype)
    for op in expand(graph.ops):
        ctx.origin = op.origin
        try:
            values = RULES[type(op)](ctx, op)
        except NotBuildable as e:
            found.append((op.op_type, op.origin, str(e)))
            values = [ctx.fresh("unbuilt") for _ in op.outputs]
        for tensor, v in zip(op.outputs, values):
            ctx.env[tensor] = v
    if found:
        raise SofieOperatorsError(found)
    outputs = _outputs(ctx)
    for operator, _, _ in _live(ctx.ops, outputs):
        rm.add_operator(operator)
    for name, (array, writable) in ctx.inits.items():
        if name in _reads(ctx.ops, outputs):
            rm.add_initialized_tensor(name, etype(array.dtype), list(array.shape) or [1], array.reshape(-1))
            if not writable:
                rm.set_not_writable_initialized_tensor(name)
    if any(name in RULES_NEEDING_BLAS for name in (type(op[0]).__name__ for op in ctx.ops)):
        rm.add_blas_routines(["Gemm", "Gemv", "Axpy"])
    rm.add_needed_std_lib("cmath")
    rm.add_output_tensor_name_list(outputs)
    return rm


RULES_NEEDING_BLAS = ("ROperator_Gemm_float", "ROperator_Conv_float")


def _outputs(ctx) -> list:
    """The model outputs under their own names: one computed under another name (a view of an input,
    a weight, an output listed twice) gets an Identity (SOFIE needs an operator writing each)."""
    s, names, seen = ctx.sofie, [], set()
    for name in ctx.g.outputs:
        v = ctx.value(name)
        made = any(name in outs for _, _, outs in ctx.ops)
        if v != name or not made or name in seen:
            out = name if v != name and not made else ctx.fresh(f"{name}_copy")
            if ctx.dtype(v) not in (None, "float32"):
                raise SofieOperatorsError([("output", name, f"a {ctx.dtype(v)} output that is a copy of another "
                                                              "tensor: SOFIE's Identity is float only")])
            ctx.add(s.ROperator_Identity["float"](v, out), [v], [out])
            name = out
        seen.add(name)
        names.append(name)
    return names


def _live(ops, outputs) -> list:
    need, keep = set(outputs), []
    for entry in reversed(ops):
        if any(o in need for o in entry[2]):
            keep.append(entry)
            need.update(entry[1])
    return keep[::-1]


def _reads(ops, outputs) -> set:
    return {i for _, ins, _ in _live(ops, outputs) for i in ins}
