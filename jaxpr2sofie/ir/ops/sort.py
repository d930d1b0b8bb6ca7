"""Sorting along one axis: Sort (lax.sort: several operands, lexicographic keys, stable) and TopK.

Both sort a row of indices (a scratch buffer the memory plan places) with a comparator, then
gather every operand through the permutation. Floats order as jnp.sort does: NaN after
everything, -0.0 equal to +0.0 (a stable sort keeps their order).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..tensor import numel
from .base import Op
from ..rows import along_axis_rows


def rows_of(shape, axis):
    """(outer, n, inner): a row along `axis` starts at o*n*inner + i and steps by inner."""
    return numel(shape[:axis]), int(shape[axis]), numel(shape[axis + 1:])


class _AxisSort(Op):
    axis: int = -1

    def scratch(self, g):
        return {"perm": ((g.tensors[self.inputs[0]].shape[self.axis],), "int32")}


@dataclass(eq=False)
class Sort(_AxisSort):
    """Every operand sorted by the permutation that orders the first `num_keys` operands."""
    axis: int = -1
    num_keys: int = 1

    def infer(self, g):
        return [(g.tensors[a].shape, g.tensors[a].dtype) for a in self.inputs]

    def describe(self):
        return f"axis={self.axis} keys={self.num_keys} operands={len(self.inputs)}"

    def rows(self, g) -> str:
        return along_axis_rows(g, self)


@dataclass(eq=False)
class TopK(_AxisSort):
    """The k largest along `axis`, largest first, the lower index first among equals; outputs
    (values, int32 indices)."""
    axis: int = -1
    k: int = 1

    def infer(self, g):
        x = g.tensors[self.inputs[0]]
        shape = list(x.shape)
        if not 0 <= self.k <= shape[self.axis]:
            raise ValueError(f"top_k of {self.k} along an axis of {shape[self.axis]}")
        shape[self.axis] = self.k
        return [(tuple(shape), x.dtype), (tuple(shape), "int32")]

    def describe(self):
        return f"axis={self.axis} k={self.k}"

    def rows(self, g) -> str:
        return along_axis_rows(g, self)
