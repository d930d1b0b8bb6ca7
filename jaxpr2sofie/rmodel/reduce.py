"""Reductions as SOFIE's ReduceSum/Max/Min/Prod, CumSum and Softmax (float only)."""
from __future__ import annotations

from ..ir.ops.reduce import Cumulative, Reduce, Softmax
from .context import NotBuildable, builds

_REDUCE = {"sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin", "prod": "ReduceProd"}


def _float_input(ctx, op):
    t = ctx.g.tensors[op.inputs[0]]
    if t.dtype != "float32":
        raise NotBuildable(f"{op.op_type} of {t.dtype}: SOFIE's operator is built for float here")
    if any(t.shape[k] == 0 for k in range(len(t.shape)) if isinstance(t.shape[k], int)):
        raise NotBuildable(f"{op.op_type} of an empty tensor {tuple(t.shape)}")
    return t


@builds(Reduce)
def _reduce(ctx, op):
    t = _float_input(ctx, op)
    out = ctx.g.tensors[op.outputs[0]]
    if not op.axes:
        return [ctx.value(t.name)]
    x = ctx.value(t.name)
    y = ctx.fresh(_REDUCE[op.kind].lower())
    cls = getattr(ctx.sofie, f"ROperator_{_REDUCE[op.kind]}")
    if out.shape:
        return [ctx.add(cls(0, sorted(int(a) for a in op.axes), x, "", y), [x], [y], out.shape)]
    # to a scalar: SOFIE's Reduce with keepdims=0 refuses to reduce every axis, so the dims are kept
    # and the result reshaped to SOFIE's one-element [1]
    y = ctx.add(cls(1, sorted(int(a) for a in op.axes), x, "", y), [x], [y], (1,) * len(t.shape))
    return [ctx.reshape(y, ())]


@builds(Cumulative)
def _cumulative(ctx, op):
    t = _float_input(ctx, op)
    if op.kind != "sum":
        raise NotBuildable(f"a cumulative {op.kind}: SOFIE has CumSum only")
    x = ctx.value(t.name)
    y = ctx.fresh("cumsum")
    return [ctx.add(ctx.sofie.ROperator_CumSum["float"](op.axis, 0, int(op.reverse), x, y), [x], [y], t.shape)]


@builds(Softmax)
def _softmax(ctx, op):
    t = _float_input(ctx, op)
    x = ctx.value(t.name)
    y = ctx.fresh("softmax")
    axis = op.axis % len(t.shape)
    return [ctx.add(ctx.sofie.ROperator_Softmax(axis, x, y), [x], [y], t.shape)]
