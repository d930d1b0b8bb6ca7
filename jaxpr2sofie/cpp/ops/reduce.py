"""Reductions in C++: a loop over the kept positions, an accumulator per lane."""
from __future__ import annotations

from contextlib import contextmanager

from ...ir.ops.reduce import ArgReduce, Cumulative, Reduce, Softmax
from ...ir.tensor import ctype, strides_of
from ..rules import emits

_INIT = {"sum": "({T})0", "prod": "({T})1",
         "max": "std::numeric_limits<{T}>::lowest()", "min": "std::numeric_limits<{T}>::max()"}
_INIT_FLOAT = {"max": "-std::numeric_limits<{T}>::infinity()", "min": "std::numeric_limits<{T}>::infinity()"}
_STEP = {"sum": "{acc} += {x};", "prod": "{acc} *= {x};",
         "max": "if ({x} > {acc} || {x} != {x}) {acc} = {x};",
         "min": "if ({x} < {acc} || {x} != {x}) {acc} = {x};"}


def init_value(kind, dtype) -> str:
    t = ctype(dtype)
    table = dict(_INIT, **(_INIT_FLOAT if dtype.startswith("float") else {}))
    return table[kind].replace("{T}", t)


def accumulate(kind, acc, x, dtype) -> str:
    s = _STEP[kind]
    if not dtype.startswith("float"):
        s = s.replace(" || {x} != {x}", "")
    return s.format(acc=acc, x=x)


@contextmanager
def lanes(w, shape, axis):
    """Loops over every position except along `axis`; yields (loop indices, offset of the lane
    start, element stride along the lane)."""
    st = strides_of(shape)
    keep = [k for k in range(len(shape)) if k != axis]
    with w.loops([shape[k] for k in keep]) as oi:
        yield oi, w.index(oi, [st[k] for k in keep]), st[axis]


@emits(Reduce)
def _reduce(op, w, g):
    t = g.tensors[op.inputs[0]]
    st = strides_of(t.shape)
    keep = [k for k in range(len(t.shape)) if k not in op.axes]
    out = g.tensors[op.outputs[0]]
    w.comment(f"{op.op_type} axes={tuple(op.axes)}")
    with w.loops([t.shape[k] for k in keep]) as oi:
        acc = w.fresh("acc")
        w.line(f"{ctype(t.dtype)} {acc} = {init_value(op.kind, t.dtype)};")
        with w.loops([t.shape[k] for k in op.axes], stem="r") as ri:
            x = f"{w.ref(t.name)}[{w.index(oi + ri, [st[k] for k in keep] + [st[k] for k in op.axes])}]"
            w.line(accumulate(op.kind, acc, x, t.dtype))
        w.line(f"{w.ref(out.name)}[{w.index(oi, strides_of(out.shape))}] = {acc};")


@emits(ArgReduce)
def _argreduce(op, w, g):
    t = g.tensors[op.inputs[0]]
    out = g.tensors[op.outputs[0]]
    cmp = ">" if op.kind == "max" else "<"
    nan = t.dtype.startswith("float")
    w.comment(f"{op.op_type} axis={op.axis}")
    with lanes(w, t.shape, op.axis) as (oi, base, step):
        best, arg, x = w.fresh("best"), w.fresh("arg"), w.fresh("x")
        w.line(f"{ctype(t.dtype)} {best} = {w.ref(t.name)}[{base}];")
        w.line(f"size_t {arg} = 0;")
        with w.block(f"for (size_t r = 1; r < {t.shape[op.axis]}; ++r)"):
            w.line(f"{ctype(t.dtype)} {x} = {w.ref(t.name)}[{base} + r * {step}];")
            cond = f"{x} {cmp} {best}" + (f" || ({x} != {x} && {best} == {best})" if nan else "")
            w.line(f"if ({cond}) {{ {best} = {x}; {arg} = r; }}")
        w.line(f"{w.ref(out.name)}[{w.index(oi, strides_of(out.shape))}] = static_cast<{ctype(op.index_dtype)}>({arg});")


@emits(Cumulative)
def _cumulative(op, w, g):
    t = g.tensors[op.inputs[0]]
    n = t.shape[op.axis]
    src, dst = w.ref(t.name), w.ref(op.outputs[0])
    w.comment(f"{op.op_type} axis={op.axis}{' reverse' if op.reverse else ''}")
    with lanes(w, t.shape, op.axis) as (_, base, step):
        acc = w.fresh("acc")
        w.line(f"{ctype(t.dtype)} {acc} = {init_value(op.kind, t.dtype)};")
        pos = f"({n - 1} - r)" if op.reverse else "r"
        with w.block(f"for (size_t r = 0; r < {n}; ++r)"):
            at = f"{base} + {pos} * {step}"
            w.line(accumulate(op.kind, acc, f"{src}[{at}]", t.dtype))
            w.line(f"{dst}[{at}] = {acc};")


@emits(Softmax)
def _softmax(op, w, g):
    t = g.tensors[op.inputs[0]]
    n = t.shape[op.axis]
    x, y, T = w.ref(t.name), w.ref(op.outputs[0]), ctype(t.dtype)
    w.comment(f"Softmax axis={op.axis}")
    with lanes(w, t.shape, op.axis) as (_, base, s):
        at = f"{base} + r * {s}" if s != 1 else f"{base} + r"
        mx, total = w.fresh("mx"), w.fresh("sum")
        w.line(f"{T} {mx} = -std::numeric_limits<{T}>::infinity();")
        with w.block(f"for (size_t r = 0; r < {n}; ++r)"):
            w.line(accumulate("max", mx, f"{x}[{at}]", t.dtype))
        w.line(f"{T} {total} = 0;")
        if s == 1 and t.dtype == "float32":   # a contiguous row: exp over whole vectors (vmath.py)
            w.need("vmath")
            with w.block(f"for (size_t r = 0; r < {n}; ++r)"):
                w.line(f"{y}[{at}] = {x}[{at}] - {mx};")
            w.line(f"detail::vm_exp_n({y} + {base}, {y} + {base}, {n});")
            with w.block(f"for (size_t r = 0; r < {n}; ++r)"):
                w.line(f"{total} += {y}[{at}];")
        else:
            with w.block(f"for (size_t r = 0; r < {n}; ++r)"):
                w.line(f"{y}[{at}] = std::exp({x}[{at}] - {mx});")
                w.line(f"{total} += {y}[{at}];")
        with w.block(f"for (size_t r = 0; r < {n}; ++r)"):
            w.line(f"{y}[{at}] /= {total};")
