"""dot_general -> MatMul (a BLAS sgemm per batch entry); the bias of `x @ W + b` is fused later."""
from __future__ import annotations

import numpy as np
from jax import lax

from ..ir.ops.linalg import MatMul
from ..ir.ops.movement import Transpose
from ..ir.tensor import numel
from ..values import Unsupported
from . import handles, out_aval


def _arrange(ctx, x, batch, free, contract, allow_contract_first: bool):
    """Bring operand `x` to [batch..., free..., contract...] (or [batch..., contract..., free...]).

    Returns (value, contract_first). A constant is transposed at conversion time; a run-time
    tensor only when neither order can be had by a BLAS transpose flag.
    """
    order_a = list(batch) + list(free) + list(contract)
    order_b = list(batch) + list(contract) + list(free)
    if order_a == sorted(order_a):
        return x, False
    if allow_contract_first and order_b == sorted(order_b):
        return x, True
    return ctx.add(Transpose([ctx.tensor(x)], perm=tuple(order_a)), hint="transpose"), False


@handles(lax.dot_general_p, params=("dimension_numbers", "precision", "preferred_element_type"))
def _dot_general(ctx, eqn, lhs, rhs):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    pet = eqn.params.get("preferred_element_type")
    if pet is not None and np.dtype(pet) != np.float32:
        raise Unsupported(f"dot_general accumulating in {np.dtype(pet).name}: only float32 is supported")
    ls, rs = ctx.shape(lhs), ctx.shape(rhs)
    lfree = [d for d in range(len(ls)) if d not in lc and d not in lb]
    rfree = [d for d in range(len(rs)) if d not in rc and d not in rb]
    size = lambda s, dims: numel(s[d] for d in dims)   # an int, or a Sym holding the run-time batch
    batch, m, k, n = size(ls, lb), size(ls, lfree), size(ls, lc), size(rs, rfree)
    # Contracting dims must line up pairwise; transposing to sorted order keeps that pairing only
    # if both sides list them in increasing order, so sort the pairs by the lhs dimension.
    pairs = sorted(zip(lc, rc))
    lc, rc = [p[0] for p in pairs], [p[1] for p in pairs]
    if list(rc) != sorted(rc):
        rhs = ctx.add(Transpose([ctx.tensor(rhs)], perm=tuple(list(rb) + list(rc) + rfree)), hint="transpose")
        rb, rc, rfree = range(len(rb)), range(len(rb), len(rb) + len(rc)), range(len(rb) + len(rc), len(rs))
    lhs, trans_a = _arrange(ctx, lhs, lb, lfree, lc, allow_contract_first=True)
    rhs, rhs_contract_first = _arrange(ctx, rhs, rb, rfree, rc, allow_contract_first=True)
    op = MatMul([ctx.tensor(lhs), ctx.tensor(rhs)], batch=batch, m=m, k=k, n=n,
                trans_a=trans_a, trans_b=not rhs_contract_first, out_shape=tuple(out_aval(eqn).shape))
    return ctx.add(op, hint="matmul")



# ---------------------------------------------------------------------------------------------
# Test cases (see cases.py)
import jax.numpy as _jnp   # noqa: E402

from .cases import Case, f32   # noqa: E402

_dg = lax.dot_general
CASES = [
    Case("dot_general_matmul", lambda a, b: a @ b, (f32(3, 5), f32(5, 4)), ("dot_general",), ops=("MatMul",)),
    Case("dot_general_weight_bias", lambda p, x: _jnp.tanh(x @ p["w"] + p["b"]),
         (f32(2, 6),), ("dot_general", "add"), params={"w": f32(6, 4), "b": f32(4)}, ops=("Gemm", "Tanh"),
         no_ops=("MatMul", "Add")),
    # dense layers: weights packed in panels, bias and relu in the product's epilogue; M = 5 and 13
    # cover the kernel's row tails, N = 37 a zero-padded last panel
    Case("dot_general_dense_relu_epilogue", lambda p, x: _jnp.maximum(x @ p["w"] + p["b"], 0.0),
         (f32(5, 40),), ("dot_general", "add", "max"), params={"w": f32(40, 37), "b": f32(37)}, ops=("Gemm",),
         no_ops=("MatMul", "Add", "Relu")),
    Case("dot_general_dense_rows_in_tiles_and_tail", lambda p, x: x @ p["w"], (f32(13, 20),), ("dot_general",),
         params={"w": f32(20, 33)}, ops=("MatMul",)),
    Case("dot_general_dense_relu_dynamic_batch", lambda p, x: _jnp.maximum(x @ p["w"] + p["b"], 0.0) @ p["v"],
         (f32(7, 9),), ("dot_general", "add", "max"), params={"w": f32(9, 18), "b": f32(18), "v": f32(18, 3)},
         ops=("Gemm", "MatMul"), no_ops=("Relu",), batch="dynamic"),
    # products of two activations read B's 16-column panels in place (kernels.gemm_rows): row tiles
    # of 6 and a tail row, two whole panels and 5 columns left over, at a fixed and a run-time batch
    Case("dot_general_activations_in_register_tiles", lambda a, b: _jnp.matmul(a, b), (f32(2, 13, 20), f32(2, 20, 37)),
         ("dot_general",)),
    Case("dot_general_activations_dynamic_batch", lambda x: x @ (x.T @ x), (f32(7, 20),), ("dot_general", "transpose"),
         batch="dynamic"),
    # K = 1500: rows go in blocks of 18 (A's share of the cache), so 29 rows are two blocks, each
    # with its own tail of rows, against two panels of the packed weight
    Case("dot_general_dense_row_blocks", lambda p, x: x @ p["w"], (f32(29, 1500),), ("dot_general",),
         params={"w": f32(1500, 20)}, ops=("MatMul",)),
    Case("dot_general_weight_read_in_two_layouts", lambda p, x: (x @ p["w"]) @ p["w"].T, (f32(3, 8),),
         ("dot_general", "transpose"), params={"w": f32(8, 8)}),
    Case("dot_general_vector", lambda a, b: _jnp.dot(a, b), (f32(7), f32(7)), ("dot_general",)),
    Case("dot_general_matvec", lambda a, b: a @ b, (f32(4, 7), f32(7)), ("dot_general",)),
    Case("dot_general_trans_a", lambda a, b: _dg(a, b, (((0,), (0,)), ((), ()))), (f32(5, 3), f32(5, 4)),
         ("dot_general",)),
    Case("dot_general_trans_b", lambda a, b: a @ b.T, (f32(3, 5), f32(4, 5)), ("dot_general", "transpose")),
    Case("dot_general_batched", lambda a, b: _jnp.matmul(a, b), (f32(2, 3, 5), f32(2, 5, 4)), ("dot_general",)),
    Case("dot_general_batch_dim_last", lambda a, b: _dg(a, b, (((0,), (1,)), ((2,), (0,)))),
         (f32(5, 3, 2), f32(2, 5, 4)), ("dot_general",)),
    Case("dot_general_two_contracting", lambda a, b: _dg(a, b, (((1, 2), (2, 0)), ((), ()))),
         (f32(3, 4, 5), f32(5, 6, 4)), ("dot_general",)),
    Case("dot_general_einsum", lambda a, b: _jnp.einsum("bij,bkj->bik", a, b), (f32(2, 3, 4), f32(2, 5, 4)),
         ("dot_general",)),
    Case("dot_general_rank3_by_matrix", lambda a, b: a @ b, (f32(2, 3, 5), f32(5, 4)), ("dot_general",)),
    Case("dot_general_weight_transposed", lambda p, x: x @ p["w"].T, (f32(3, 6),), ("dot_general", "transpose"),
         params={"w": f32(4, 6)}),
    # found by tests/fuzz: a product with an empty contraction (all zeros, plus the bias)
    Case("dot_general_empty_contraction", lambda a: a[:, :0] @ a[:0, :] + 1.0, (f32(3, 4),), ("dot_general",)),
    Case("mlp", lambda p, x: _jnp.tanh(x @ p[0]["w"] + p[0]["b"]) @ p[1]["w"] + p[1]["b"], (f32(4, 8),),
         ("dot_general",), params=[{"w": f32(8, 16, scale=0.3), "b": f32(16)}, {"w": f32(16, 3, scale=0.3), "b": f32(3)}]),
]
