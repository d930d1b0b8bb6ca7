"""Matrix products: MatMul, and Gemm once a bias has been fused in (SOFIE's ROperator_Gemm)."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnsupportedDtypeError
from .base import Op
from ..dims import Sym
from ..rows import blocked, same_rows, unbatched


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

    def flops(self, g):
        epilogue = (len(self.inputs) > 2) + bool(self.act)   # bias add, activation
        return 2 * self.batch * self.m * self.n * self.k + epilogue * self.batch * self.m * self.n

    def describe(self):
        # the product's sizes as shapes, not as M/K/N: in a summary N is the run-time batch alone
        return ((f"{self.batch} products " if self.batch != 1 else "") + f"({self.m} x {self.k}) @ ({self.k} x {self.n})"
                + (" transA" if self.trans_a else "") + (" transB" if self.trans_b else "")
                + (f" +{self.act}" if self.act else ""))

    def rows(self, g) -> str:
        a, b = (g.tensors[n].shape for n in self.inputs[:2])
        rest = self.inputs[2:]
        if isinstance(self.batch, Sym):   # one product per row (vmapped): A, B and output all per row
            if any(isinstance(d, Sym) for d in (self.m, self.k, self.n)):
                return "has the batch in a matrix dimension of a per-row product"
            return same_rows(g, self, self.inputs[:2]) or ("" if all(unbatched(g.tensors[n].shape) for n in rest)
                                                            else "adds a per-row bias to a per-row product")
        # rows of A are rows of the output: the batch must be M, never K, and B shared by all rows
        if self.batch != 1 or self.trans_a or not isinstance(self.m, Sym) or isinstance(self.k, Sym) \
                or not blocked(a) or not unbatched(b):
            return "contracts or mixes the batch axis"
        return same_rows(g, self, [self.inputs[0], *rest])
