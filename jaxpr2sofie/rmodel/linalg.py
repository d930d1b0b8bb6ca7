"""MatMul as SOFIE's Gemm: the transposes as transA/transB, a bias as C, a fused relu as the
Gemm's own activation.

Our MatMul reads its operands as flat [batch, M, K] / [batch, K, N] buffers whatever their shapes;
weights are rearranged at conversion time, run-time operands reshaped. A product per batch entry
(attention heads) is SOFIE's Gemm on rank-3 operands, which it runs as stacked products.
"""
from __future__ import annotations

import numpy as np

from ..ir.dims import Sym
from ..ir.ops.linalg import MatMul
from .context import NotBuildable, builds

ACTIVATION = {"relu": "RELU"}


def _operand(ctx, name, shape, transposed):
    """Operand `name` at `shape`: a weight rearranged now, a run-time tensor reshaped."""
    t = ctx.g.tensors[name]
    if t.data is not None and name not in ctx.env:
        arr = np.asarray(t.data).reshape(shape)
        return ctx.weight(name, arr, f"{name}_{'x'.join(map(str, shape))}")
    return ctx.reshape(ctx.value(name), shape)


@builds(MatMul)
def _matmul(ctx, op):
    s = ctx.sofie
    out = ctx.g.tensors[op.outputs[0]]
    stack = () if op.batch == 1 else (op.batch,)
    a = _operand(ctx, op.inputs[0], stack + ((op.k, op.m) if op.trans_a else (op.m, op.k)), op.trans_a)
    b = _operand(ctx, op.inputs[1], stack + ((op.n, op.k) if op.trans_b else (op.k, op.n)), op.trans_b)
    if stack and (op.trans_a or op.trans_b):   # SOFIE's stacked Gemm transposes no operand: move them here
        a = ctx.transpose(a, (0, 2, 1)) if op.trans_a else a
        b = ctx.transpose(b, (0, 2, 1)) if op.trans_b else b
    act = getattr(s.EActivationType, ACTIVATION[op.act]) if op.act in ACTIVATION else s.EActivationType.UNDEFINED
    if op.act and op.act not in ACTIVATION:
        raise NotBuildable(f"a product with a fused {op.act}: SOFIE's Gemm fuses relu only")
    y = ctx.fresh("gemm")
    ins = [a, b]
    if len(op.inputs) > 2:
        ins.append(_bias(ctx, op, op.inputs[2], stack))
    trans = (0, 0) if stack else (int(op.trans_a), int(op.trans_b))
    ctx.add(s.ROperator_Gemm["float"](1.0, 1.0 if len(ins) > 2 else 0.0, *trans, *ins, y, act), ins, [y],
            stack + (op.m, op.n))
    return [ctx.reshape(y, out.shape)]


def _bias(ctx, op, name, stack):
    """SOFIE's Gemm broadcasts a C of N values over the rows (a Copy per row, also at a run-time batch);
    a scalar C (a zero bias) it refuses: a bias of one value is written out as N."""
    t = ctx.g.tensors[name]
    if t.data is None:
        raise NotBuildable("a bias computed at run time: SOFIE's Gemm reads a weight as C")
    if stack:
        raise NotBuildable("a bias on a product per batch entry")
    arr = np.asarray(t.data, np.float32).reshape(-1)
    if arr.size == 1:
        arr = np.full(op.n, arr[0], np.float32)
    if arr.size == op.n:
        return ctx.weight(name, arr.reshape(op.n), f"{name}_row")
    if isinstance(op.m, Sym):
        raise NotBuildable("a bias with one value per row of a run-time batch")
    return ctx.weight(name, arr.reshape(op.m, op.n), f"{name}_mat")
