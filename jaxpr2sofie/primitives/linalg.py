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
