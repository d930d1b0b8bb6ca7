"""A chain of elementwise operators run as one loop (the `fuse_elementwise` pass builds it).

Unfused, `x * 0.5 * (1 + y)` is three loops, each reading and writing a whole tensor; fused it is
one loop that keeps the intermediate values in registers. The steps are the original
`Elementwise` operators, unchanged: each keeps its output tensor's name, which the fused loop
holds in a local variable instead of memory (the tensor table marks those tensors "fused", so the
memory plan gives them no storage). Every step's result has the fused output's shape, so one
index walks them all; operands from outside the chain may broadcast, as an Elementwise's do.
The C++ of each step is its operator's own template (cpp/ops/fused.py); the one difference fusing can make is
that g++ may contract a multiply and an add of neighbouring steps into one FMA, as it does within
any one expression (a last-bit change, like XLA's own contractions).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..tensor import numel
from .base import Op, Scalar
from .elementwise import VECTOR_KINDS
from ..rows import same_rows

# Kinds whole vectors compute as written (arithmetic; relu and max/min against a literal as a lane pick)
VECTOR_ARITH = frozenset({"add", "sub", "mul", "div", "neg", "square", "identity", "integer_pow"})


def vector_chain(g, steps, shape) -> bool:
    """Whether `steps` can run as a whole-vector loop: float32 throughout, every outside operand
    of the output's own shape (or a literal), every step a kind vectors do as written."""
    made = {s.outputs[0] for s in steps}
    for s in steps:
        if s.dtype != "float32" or not (s.kind in VECTOR_ARITH or s.kind in VECTOR_KINDS or s.kind == "relu"
                                         or s.literal_bound()):
            return False
        for a in s.args:
            if isinstance(a, Scalar):
                if a.dtype != "float32":
                    return False
            elif a not in made and (g.tensors[a].dtype != "float32" or g.tensors[a].shape != shape):
                return False
    return True


@dataclass(eq=False)
class FusedElementwise(Op):
    steps: list = field(default_factory=list)   # Elementwise operators, in order; the last makes the output

    elementwise = True   # reads each operand at the output's own index (cpp/memory.in_place_carries)

    @classmethod
    def chain(cls, g, first, second) -> "FusedElementwise":
        """`first` (an Elementwise or a fused chain) feeding `second` (likewise), as one chain."""
        steps = [*steps_of(first), *steps_of(second)]
        for s in steps_of(first):
            g.tensors[s.outputs[0]].kind = "fused"
        internal = {s.outputs[0] for s in steps}
        inputs = [a for s in steps for a in s.inputs if a not in internal]
        return cls(list(dict.fromkeys(inputs)), steps=steps, outputs=list(second.outputs),
                   origin=second.origin or first.origin, scope=second.scope or first.scope)

    @property
    def internal(self) -> list:
        """The tensors computed inside the loop (kept in the table for summaries and ONNX export)."""
        return [s.outputs[0] for s in self.steps[:-1]]

    def infer(self, g):
        t = g.tensors[self.outputs[0]]
        return [(t.shape, t.dtype)]

    def flops(self, g) -> int:
        return numel(g.tensors[self.outputs[0]].shape) * len(self.steps)

    def describe(self) -> str:
        return " > ".join(s.describe() for s in self.steps)

    def rows(self, g) -> str:
        return same_rows(g, self, self.inputs)


def steps_of(op) -> list:
    return list(op.steps) if isinstance(op, FusedElementwise) else [op]


def expand(ops) -> list:
    """`ops` with every fused chain replaced by its steps (for tools that read the unfused form)."""
    return [s for op in ops for s in steps_of(op)]

