"""Reductions: Reduce (sum/max/min/prod over axes), ArgReduce (argmax/argmin), Cumulative (cumsum...)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Op
from ..rows import along_axis_rows

@dataclass(eq=False)
class Reduce(Op):
    kind: str = "sum"
    axes: tuple = ()

    @property
    def op_type(self):
        return {"sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin", "prod": "ReduceProd"}[self.kind]

    def infer(self, g):
        t = g.tensors[self.inputs[0]]
        return [(tuple(n for k, n in enumerate(t.shape) if k not in self.axes), t.dtype)]

    def flops(self, g):
        return g.tensors[self.inputs[0]].size

    def describe(self):
        return f"axes={tuple(self.axes)}"

    def rows(self, g) -> str:
        return "" if 0 not in self.axes else "reduces over the batch axis"


@dataclass(eq=False)
class ArgReduce(Op):
    """argmax/argmin along one axis; the first index wins ties; a NaN counts as the extreme."""
    kind: str = "max"
    axis: int = 0
    index_dtype: str = "int32"

    @property
    def op_type(self):
        return "ArgMax" if self.kind == "max" else "ArgMin"

    def infer(self, g):
        t = g.tensors[self.inputs[0]]
        return [(tuple(n for k, n in enumerate(t.shape) if k != self.axis), self.index_dtype)]

    def describe(self):
        return f"axis={self.axis}"

    def rows(self, g) -> str:
        return along_axis_rows(g, self)


@dataclass(eq=False)
class Cumulative(Op):
    kind: str = "sum"
    axis: int = 0
    reverse: bool = False

    @property
    def op_type(self):
        return "Cum" + self.kind.capitalize()

    def infer(self, g):
        t = g.tensors[self.inputs[0]]
        return [(t.shape, t.dtype)]

    def describe(self):
        return f"axis={self.axis}"

    def rows(self, g) -> str:
        return along_axis_rows(g, self)


@dataclass(eq=False)
class Softmax(Op):
    """exp(x - max) / sum(exp(x - max)) along one axis, in three passes over that axis.

    Not produced by any primitive rule: the `fuse_softmax` pass recognises the chain that
    jax.nn.softmax lowers to and replaces it, as SOFIE has a Softmax operator.
    """
    axis: int = -1

    def infer(self, g):
        t = g.tensors[self.inputs[0]]
        return [(t.shape, t.dtype)]

    def flops(self, g):
        return 4 * g.tensors[self.inputs[0]].size

    def describe(self):
        return f"axis={self.axis}"

    def rows(self, g) -> str:
        return along_axis_rows(g, self)
