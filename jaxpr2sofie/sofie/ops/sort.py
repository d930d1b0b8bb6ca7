"""Sorting along one axis: Sort (lax.sort: several operands, lexicographic keys, stable) and TopK.

Both sort a row of indices (a scratch buffer the memory plan places) with a comparator, then
gather every operand through the permutation. Floats order as jnp.sort does: NaN after
everything, -0.0 equal to +0.0 (a stable sort keeps their order).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..tensor import ctype, numel
from .base import Op


def _less(dtype: str, a: str, b: str) -> str:
    if dtype.startswith("float"):
        return f"(!std::isnan({a}) && (std::isnan({b}) || {a} < {b}))"
    return f"({a} < {b})"


def _rows(shape, axis):
    """(outer, n, inner): a row along `axis` starts at o*n*inner + i and steps by inner."""
    return numel(shape[:axis]), int(shape[axis]), numel(shape[axis + 1:])


class _AxisSort(Op):
    axis: int = -1

    def scratch(self, g):
        return {"perm": ((g.tensors[self.inputs[0]].shape[self.axis],), "int32")}

    def _each_row(self, w, g, body):
        shape = g.tensors[self.inputs[0]].shape
        outer, n, inner = _rows(shape, self.axis)
        perm = w.ref(self.scratch_names["perm"])
        with w.loops([outer, inner], stem="r") as (o, i):
            base = w.fresh("row")
            w.line(f"const size_t {base} = {w.index([o, i], [n * inner, 1])};")
            with w.loops([n], stem="j") as (j,):
                w.line(f"{perm}[{j}] = static_cast<int32_t>({j});")
            body(base, n, inner, perm, (o, i))


@dataclass(eq=False)
class Sort(_AxisSort):
    """Every operand sorted by the permutation that orders the first `num_keys` operands."""
    axis: int = -1
    num_keys: int = 1

    def infer(self, g):
        return [(g.tensors[a].shape, g.tensors[a].dtype) for a in self.inputs]

    def emit(self, w, g):
        w.comment(f"Sort {self.describe()}")
        if numel(g.tensors[self.inputs[0]].shape) == 0:
            return

        def body(base, n, inner, perm, _):
            keys = [(w.ref(k), g.tensors[k].dtype) for k in self.inputs[:self.num_keys]]
            w.line(f"std::stable_sort({perm}, {perm} + {n}, [&](int32_t a, int32_t b) {{")
            w.depth += 1
            for ref, dt in keys:
                x, y = (f"{ref}[{base} + static_cast<size_t>({v}) * {inner}]" for v in ("a", "b"))
                w.line(f"if ({_less(dt, x, y)}) return true;")
                w.line(f"if ({_less(dt, y, x)}) return false;")
            w.line("return false;")
            w.depth -= 1
            w.line("});")
            for src, dst in zip(self.inputs, self.outputs):
                with w.loops([n], stem="j") as (j,):
                    w.line(f"{w.ref(dst)}[{base} + {j} * {inner}] = {w.ref(src)}[{base} + {perm}[{j}] * {inner}];")

        self._each_row(w, g, body)

    def describe(self):
        return f"axis={self.axis} keys={self.num_keys} operands={len(self.inputs)}"


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

    def emit(self, w, g):
        x = g.tensors[self.inputs[0]]
        vals, idx = (w.ref(o) for o in self.outputs)
        w.comment(f"TopK {self.describe()}")
        if x.size == 0 or self.k == 0:
            return
        T = ctype(x.dtype)

        def body(base, n, inner, perm, oi):
            o, i = oi
            ref = w.ref(x.name)
            w.line(f"std::partial_sort({perm}, {perm} + {self.k}, {perm} + {n}, [&](int32_t a, int32_t b) {{")
            w.line(f"   const {T} va = {ref}[{base} + static_cast<size_t>(a) * {inner}];")
            w.line(f"   const {T} vb = {ref}[{base} + static_cast<size_t>(b) * {inner}];")
            w.line(f"   return {_less(x.dtype, 'vb', 'va')} || (!{_less(x.dtype, 'va', 'vb')} && a < b);")
            w.line("});")
            out_base = w.index([o, i], [self.k * inner, 1])
            with w.loops([self.k], stem="j") as (j,):
                at = f"{out_base} + {j} * {inner}"
                w.line(f"{vals}[{at}] = {ref}[{base} + {perm}[{j}] * {inner}];")
                w.line(f"{idx}[{at}] = {perm}[{j}];")

        self._each_row(w, g, body)

    def describe(self):
        return f"axis={self.axis} k={self.k}"
