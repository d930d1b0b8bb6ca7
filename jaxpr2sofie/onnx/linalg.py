"""MatMul / Gemm.

Our MatMul reads its operands as flat [batch, M, K] / [batch, K, N] buffers whatever their
declared shapes (a dot_general contracting several dims), so each operand is first viewed at that
shape; weights are reshaped at export time, keeping their key-path names.
"""
from __future__ import annotations

from ..ir.ops.linalg import MatMul
from .builder import exports


def _bias(b, op, name):
    nb = b.g.tensors[name].size
    return b.view(name, (op.n,) if nb == op.n else (op.m, op.n))


@exports(MatMul)
def _matmul(b, op):
    (y,) = _product(b, op)
    # the epilogue's activation, a node of its own in ONNX (SOFIE's parser fuses Gemm + Relu itself)
    return [b.ew(ONNX_ACT[op.act], y)] if op.act else [y]


ONNX_ACT = {"relu": "Relu"}


def _product(b, op):
    a_mat = (op.k, op.m) if op.trans_a else (op.m, op.k)
    b_mat = (op.n, op.k) if op.trans_b else (op.k, op.n)
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    out = b.g.tensors[op.outputs[0]]
    if op.batch == 1:
        a = b.view(op.inputs[0], a_mat)
        w = b.view(op.inputs[1], b_mat)
        if bias is None and not op.trans_a and not op.trans_b:
            y = b.node("MatMul", [a, w], hint="matmul", shape=(op.m, op.n), dtype="float32")
        else:
            # Gemm carries the transposes; with no bias the C input is left out altogether
            # (SOFIE's parser rejects a scalar zero bias with beta=0).
            ins = [a, w] + ([_bias(b, op, bias)] if bias is not None else [])
            y = b.node("Gemm", ins, hint="gemm", shape=(op.m, op.n), dtype="float32",
                       transA=int(op.trans_a), transB=int(op.trans_b))
        return [b.reshape(y, out.shape)]
    swap = (0, 2, 1)
    a = b.view(op.inputs[0], (op.batch,) + a_mat, perm=swap if op.trans_a else None)
    w = b.view(op.inputs[1], (op.batch,) + b_mat, perm=swap if op.trans_b else None)
    y = b.node("MatMul", [a, w], hint="matmul", shape=(op.batch, op.m, op.n), dtype="float32")
    if bias is not None:
        y = b.ew("Add", y, _bias(b, op, bias) if b.g.tensors[bias].size == op.n
                 else b.view(bias, (op.batch, op.m, op.n)))
    return [b.reshape(y, out.shape)]
