"""Matrix products: MatMul, and Gemm once a bias has been fused in (SOFIE's ROperator_Gemm)."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnsupportedDtypeError
from ..dims import Sym
from ..kernels import ACTIVATIONS
from .base import Op
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


@dataclass(eq=False)
class MatMul(Op):
    """out[b] = op(A[b]) @ op(B[b]) (+ bias), row-major, one BLAS sgemm per batch entry.

    A is stored [batch, M, K] ([batch, K, M] when trans_a), B [batch, K, N] ([batch, N, K] when
    trans_b). The output shape is whatever the
    source primitive says (its element order is [batch, M, N]). `bias` (inputs[2], if present)
    has N elements (added to every row) or M*N elements.
    """
    batch: int = 1
    m: int = 1
    k: int = 1
    n: int = 1
    trans_a: bool = False
    trans_b: bool = False
    out_shape: tuple = ()
    act: str = ""                # activation applied in the product's epilogue (passes.fuse_activation)

    @property
    def op_type(self):
        return "Gemm" if len(self.inputs) > 2 else "MatMul"

    def infer(self, g):
        for a in self.inputs:
            if g.tensors[a].dtype != "float32":
                raise UnsupportedDtypeError(f"matrix product with operand {g.tensors[a].label or a!r} of dtype "
                                            f"{g.tensors[a].dtype}: only float32 products are supported; cast the "
                                            "operands to float32")
        return [(tuple(self.out_shape), "float32")]

    def packed(self, g) -> bool:
        """Whether B is a weight stored in panels (kernels.gemm_packed reads it)."""
        return bool(g.tensors[self.inputs[1]].packed)

    def emit(self, w, g):
        out = w.ref(self.outputs[0])
        a, b = w.ref(self.inputs[0]), w.ref(self.inputs[1])
        mn, mk, kn = self.m * self.n, self.m * self.k, self.k * self.n
        beta = "0.f"
        w.comment(f"{self.op_type} {self.describe()}")
        if self.packed(g):
            assert self.batch == 1 and not self.trans_a
            bias = w.ref(self.inputs[2]) if len(self.inputs) > 2 else "nullptr"
            emit_packed_gemm(w, self.m, self.n, self.k, a, b, out, bias, self.act)
            return
        if len(self.inputs) > 2:
            bias = w.ref(self.inputs[2])
            nb = g.tensors[self.inputs[2]].size
            beta = "1.f"
            with w.loops([self.batch * self.m if nb == self.n else self.batch]) as (r,):
                w.line(f"std::copy_n({bias}, {nb}, {out} + {r} * {nb});")
        with w.loops([self.batch], stem="b") as (bi,):
            ao = w.index([bi], [mk])
            bo = w.index([bi], [kn])
            oo = w.index([bi], [mn])
            emit_gemm(w, self.trans_a, self.trans_b, self.m, self.n, self.k, f"{a} + {ao}", f"{b} + {bo}", beta,
                      f"{out} + {oo}")
        if self.act:
            with w.loops([self.batch * mn]) as (i,):
                w.line(f"{out}[{i}] = {TEMPLATES[self.act][0].format(f'{out}[{i}]', T='float')};")

    def flops(self, g):
        epilogue = (len(self.inputs) > 2) + bool(self.act)   # bias add, activation
        return 2 * self.batch * self.m * self.n * self.k + epilogue * self.batch * self.m * self.n

    def describe(self):
        return (f"batch={self.batch} M={self.m} K={self.k} N={self.n}"
                + (" transA" if self.trans_a else "") + (" transB" if self.trans_b else "")
                + (f" +{self.act}" if self.act else ""))
