"""Sort and TopK in C++: a permutation per row sorted with std::stable_sort / partial_sort."""
from __future__ import annotations

from ...ir.ops.sort import Sort, TopK, rows_of
from ...ir.tensor import ctype, numel
from ..rules import emits


def _less(dtype: str, a: str, b: str) -> str:
    if dtype.startswith("float"):
        return f"(!std::isnan({a}) && (std::isnan({b}) || {a} < {b}))"
    return f"({a} < {b})"


def _each_row(op, w, g, body):
    shape = g.tensors[op.inputs[0]].shape
    outer, n, inner = rows_of(shape, op.axis)
    perm = w.ref(op.scratch_names["perm"])
    with w.loops([outer, inner], stem="r") as (o, i):
        base = w.fresh("row")
        w.line(f"const size_t {base} = {w.index([o, i], [n * inner, 1])};")
        with w.loops([n], stem="j") as (j,):
            w.line(f"{perm}[{j}] = static_cast<int32_t>({j});")
        body(base, n, inner, perm, (o, i))


@emits(Sort)
def _sort(op, w, g):
    w.comment(f"Sort {op.describe()}")
    if numel(g.tensors[op.inputs[0]].shape) == 0:
        return

    def body(base, n, inner, perm, _):
        keys = [(w.ref(k), g.tensors[k].dtype) for k in op.inputs[:op.num_keys]]
        w.line(f"std::stable_sort({perm}, {perm} + {n}, [&](int32_t a, int32_t b) {{")
        w.depth += 1
        for ref, dt in keys:
            x, y = (f"{ref}[{base} + static_cast<size_t>({v}) * {inner}]" for v in ("a", "b"))
            w.line(f"if ({_less(dt, x, y)}) return true;")
            w.line(f"if ({_less(dt, y, x)}) return false;")
        w.line("return false;")
        w.depth -= 1
        w.line("});")
        for src, dst in zip(op.inputs, op.outputs):
            with w.loops([n], stem="j") as (j,):
                w.line(f"{w.ref(dst)}[{base} + {j} * {inner}] = {w.ref(src)}[{base} + {perm}[{j}] * {inner}];")

    _each_row(op, w, g, body)


@emits(TopK)
def _topk(op, w, g):
    x = g.tensors[op.inputs[0]]
    vals, idx = (w.ref(o) for o in op.outputs)
    w.comment(f"TopK {op.describe()}")
    if x.size == 0 or op.k == 0:
        return
    T = ctype(x.dtype)

    def body(base, n, inner, perm, oi):
        o, i = oi
        ref = w.ref(x.name)
        w.line(f"std::partial_sort({perm}, {perm} + {op.k}, {perm} + {n}, [&](int32_t a, int32_t b) {{")
        w.line(f"   const {T} va = {ref}[{base} + static_cast<size_t>(a) * {inner}];")
        w.line(f"   const {T} vb = {ref}[{base} + static_cast<size_t>(b) * {inner}];")
        w.line(f"   return {_less(x.dtype, 'vb', 'va')} || (!{_less(x.dtype, 'va', 'vb')} && a < b);")
        w.line("});")
        out_base = w.index([o, i], [op.k * inner, 1])
        with w.loops([op.k], stem="j") as (j,):
            at = f"{out_base} + {j} * {inner}"
            w.line(f"{vals}[{at}] = {ref}[{base} + {perm}[{j}] * {inner}];")
            w.line(f"{idx}[{at}] = {perm}[{j}];")

    _each_row(op, w, g, body)
