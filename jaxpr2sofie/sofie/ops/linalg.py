"""Matrix products: MatMul, and Gemm once a bias has been fused in (SOFIE's ROperator_Gemm)."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnsupportedDtypeError
from ..tensor import numel
from .base import Op


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
    uses_blas = True

    @property
    def op_type(self):
        return "Gemm" if len(self.inputs) > 2 else "MatMul"

    def infer(self, g):
        for a in self.inputs:
            if g.tensors[a].dtype != "float32":
                raise UnsupportedDtypeError(f"matrix product of {g.tensors[a].dtype} tensors: only float32 is supported; "
                                            "cast the operands to float32")
        return [(tuple(self.out_shape), "float32")]

    def emit(self, w, g):
        out = w.ref(self.outputs[0])
        a, b = w.ref(self.inputs[0]), w.ref(self.inputs[1])
        mn, mk, kn = self.m * self.n, self.m * self.k, self.k * self.n
        beta = "0.f"
        w.comment(f"{self.op_type} {self.describe()}")
        if len(self.inputs) > 2:
            bias = w.ref(self.inputs[2])
            nb = g.tensors[self.inputs[2]].size
            beta = "1.f"
            with w.loops([self.batch * self.m if nb == self.n else self.batch]) as (r,):
                w.line(f"std::copy_n({bias}, {nb}, {out} + {r} * {nb});")
        ta, tb = str(self.trans_a).lower(), str(self.trans_b).lower()
        with w.loops([self.batch], stem="b") as (bi,):
            ao = w.index([bi], [mk])
            bo = w.index([bi], [kn])
            oo = w.index([bi], [mn])
            w.line(f"detail::gemm({ta}, {tb}, {self.m}, {self.n}, {self.k}, {a} + {ao}, {b} + {bo}, {beta}, {out} + {oo});")

    def flops(self, g):
        return 2 * self.batch * self.m * self.n * self.k + (self.batch * self.m * self.n if len(self.inputs) > 2 else 0)

    def describe(self):
        return (f"batch={self.batch} M={self.m} K={self.k} N={self.n}"
                + (" transA" if self.trans_a else "") + (" transB" if self.trans_b else ""))
