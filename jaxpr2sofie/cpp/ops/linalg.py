"""Matrix products in C++: plain loops, packed-panel register tiles (kernels.py) or BLAS, chosen
per call site."""
from __future__ import annotations

from ...ir.dims import Sym
from ...ir.ops.linalg import MatMul
from ..kernels import ACTIVATIONS
from ..rules import emits
from .elementwise import TEMPLATES


# At or below this many multiply-adds (or with M <= 8 rows, batch-1 inference) plain loops beat a
# BLAS call, whose set-up costs more than the arithmetic.
SMALL_GEMM = 4096


# Up to this many multiply-adds a row-major B of 16-column panels (kernels.gemm_rows) beats a BLAS
# call here: no packing copy, no set-up (measured on models C and H; larger products go to BLAS).
ROWS_GEMM = 65536


def emit_gemm(w, ta: bool, tb: bool, m: int, n: int, k: int, a: str, b: str, beta: str, c: str) -> None:
    """Row-major c = op(a) @ op(b) (+ c when beta is 1): loops for small products, BLAS otherwise.
    The choice is made here, per call site, so a header links BLAS only if some product needs it."""
    args = f"({str(ta).lower()}, {str(tb).lower()}, {m}, {n}, {k}, {a}, {b}, {beta}, {c});"
    # small enough for plain loops: a row-major B of whole 16-column panels goes through the
    # register tiles of kernels.py instead (in place, no packing)
    rows = not ta and not tb and beta == "0.f" and not isinstance(n, Sym) and n >= 16
    small = "gemm_rows" if rows else "gemm_loops"
    helper = "gemm_packed" if rows else "gemm_loops"   # gemm_rows is part of the packed-panel helper
    small_args = f"({m}, {n}, {k}, {a}, {b}, {c});" if rows else args
    limit = ROWS_GEMM if rows else SMALL_GEMM
    if not w.blas:   # convert(..., blas="none"): the header's own kernels at every size
        w.need(helper)
        w.line(f"detail::{small}{small_args}")
        return
    if any(isinstance(d, Sym) for d in (m, n, k)):   # sizes known at run time: choose there
        w.need(helper)
        w.need("gemm_blas")
        w.line(f"if ({m} <= 8 || {m * n * k} <= {limit}) detail::{small}{small_args}")
        w.line(f"else detail::gemm_blas{args}")
        return
    if m <= 8 or m * n * k <= limit:
        w.need(helper)
        w.line(f"detail::{small}{small_args}")
    else:
        w.need("gemm_blas")
        w.line(f"detail::gemm_blas{args}")


def emit_packed_gemm(w, m, n, k, a: str, packed: str, c: str, bias: str = "nullptr", act: str = "") -> None:
    """Row-major c = act(a @ B + bias) for a weight B stored in panels (kernels.gemm_packed)."""
    w.need("gemm_packed")
    w.line(f"detail::gemm_packed<{ACTIVATIONS[act]}>({m}, {n}, {k}, {a}, {packed}, {bias}, {c});")


@emits(MatMul)
def _matmul(op, w, g):
    out = w.ref(op.outputs[0])
    a, b = w.ref(op.inputs[0]), w.ref(op.inputs[1])
    mn, mk, kn = op.m * op.n, op.m * op.k, op.k * op.n
    beta = "0.f"
    w.comment(f"{op.op_type} {op.describe()}")
    if op.packed(g):
        assert op.batch == 1 and not op.trans_a
        bias = w.ref(op.inputs[2]) if len(op.inputs) > 2 else "nullptr"
        emit_packed_gemm(w, op.m, op.n, op.k, a, b, out, bias, op.act)
        return
    if len(op.inputs) > 2:
        bias = w.ref(op.inputs[2])
        nb = g.tensors[op.inputs[2]].size
        beta = "1.f"
        with w.loops([op.batch * op.m if nb == op.n else op.batch]) as (r,):
            w.line(f"std::copy_n({bias}, {nb}, {out} + {r} * {nb});")
    with w.loops([op.batch], stem="b") as (bi,):
        ao = w.index([bi], [mk])
        bo = w.index([bi], [kn])
        oo = w.index([bi], [mn])
        emit_gemm(w, op.trans_a, op.trans_b, op.m, op.n, op.k, f"{a} + {ao}", f"{b} + {bo}", beta,
                  f"{out} + {oo}")
    if op.act:
        with w.loops([op.batch * mn]) as (i,):
            w.line(f"{out}[{i}] = {TEMPLATES[op.act].format(f'{out}[{i}]', T='float')};")
