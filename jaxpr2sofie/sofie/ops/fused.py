"""A chain of elementwise operators run as one loop (the `fuse_elementwise` pass builds it).

Unfused, `x * 0.5 * (1 + y)` is three loops, each reading and writing a whole tensor; fused it is
one loop that keeps the intermediate values in registers. The steps are the original
`Elementwise` operators, unchanged: each keeps its output tensor's name, which the fused loop
holds in a local variable instead of memory (the tensor table marks those tensors "fused", so the
memory plan gives them no storage). Every step's result has the fused output's shape, so one
index walks them all; operands from outside the chain may broadcast, as an Elementwise's do.
The scalar C++ of each step is its operator's own template; the one difference fusing can make is
that g++ may contract a multiply and an add of neighbouring steps into one FMA, as it does within
any one expression (a last-bit change, like XLA's own contractions).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..tensor import ctype, numel, strides_of
from .base import Op
from .elementwise import Elementwise


@dataclass(eq=False)
class FusedElementwise(Op):
    steps: list = field(default_factory=list)   # Elementwise operators, in order; the last makes the output

    elementwise = True   # reads each operand at the output's own index (graph.in_place_carries)

    @classmethod
    def chain(cls, g, first, second) -> "FusedElementwise":
        """`first` (an Elementwise or a fused chain) feeding `second` (likewise), as one chain."""
        steps = [*_steps(first), *_steps(second)]
        for s in _steps(first):
            g.tensors[s.outputs[0]].kind = "fused"
        internal = {s.outputs[0] for s in steps}
        inputs = [a for s in steps for a in s.inputs if a not in internal]
        return cls(list(dict.fromkeys(inputs)), steps=steps, outputs=list(second.outputs),
                   origin=second.origin or first.origin)

    @property
    def internal(self) -> list:
        """The tensors computed inside the loop (kept in the table for summaries and ONNX export)."""
        return [s.outputs[0] for s in self.steps[:-1]]

    def infer(self, g):
        t = g.tensors[self.outputs[0]]
        return [(t.shape, t.dtype)]

    def emit(self, w, g) -> None:
        out = g.tensors[self.outputs[0]]
        shape = out.shape
        flat = all(g.tensors[a].shape == shape for a in self.inputs)
        w.comment(f"Fused {self.describe()}" + (f" ({self.origin})" if self.origin else ""))
        extents = [numel(shape)] if flat else list(shape)
        with w.loops(extents) as idx:
            local = {}
            for k, s in enumerate(self.steps):
                operands = [self._operand(w, g, a, idx, None if flat else shape, local) for a in s.args]
                expr = s.vector_template(g).format(*operands)
                if k == len(self.steps) - 1:
                    at = idx[0] if flat else w.index(idx, strides_of(shape))
                    w.line(f"{w.ref(out.name)}[{at}] = {expr};")
                else:
                    local[s.outputs[0]] = w.fresh("v")
                    w.line(f"const {ctype(s.dtype)} {local[s.outputs[0]]} = {expr};")

    @staticmethod
    def _operand(w, g, a, idx, shape, local) -> str:
        if isinstance(a, str) and a in local:
            return local[a]
        return Elementwise._operand(w, g, a, idx, shape)

    def flops(self, g) -> int:
        return numel(g.tensors[self.outputs[0]].shape) * len(self.steps)

    def describe(self) -> str:
        return " > ".join(s.describe() for s in self.steps)


def _steps(op) -> list:
    return list(op.steps) if isinstance(op, FusedElementwise) else [op]


def expand(ops) -> list:
    """`ops` with every fused chain replaced by its steps (for tools that read the unfused form)."""
    return [s for op in ops for s in _steps(op)]

