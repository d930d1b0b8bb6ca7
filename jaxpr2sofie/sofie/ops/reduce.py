"""Reductions: Reduce (sum/max/min/prod over axes), ArgReduce (argmax/argmin), Cumulative (cumsum...)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from ..tensor import ctype, strides_of
from .base import Op

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

    def emit(self, w, g):
        t = g.tensors[self.inputs[0]]
        st = strides_of(t.shape)
        keep = [k for k in range(len(t.shape)) if k not in self.axes]
        out = g.tensors[self.outputs[0]]
        w.comment(f"{self.op_type} axes={tuple(self.axes)}")
        with w.loops([t.shape[k] for k in keep]) as oi:
            acc = w.fresh("acc")
            w.line(f"{ctype(t.dtype)} {acc} = {init_value(self.kind, t.dtype)};")
            with w.loops([t.shape[k] for k in self.axes], stem="r") as ri:
                x = f"{w.ref(t.name)}[{w.index(oi + ri, [st[k] for k in keep] + [st[k] for k in self.axes])}]"
                w.line(accumulate(self.kind, acc, x, t.dtype))
            w.line(f"{w.ref(out.name)}[{w.index(oi, strides_of(out.shape))}] = {acc};")

    def flops(self, g):
        return g.tensors[self.inputs[0]].size

    def describe(self):
        return f"axes={tuple(self.axes)}"


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

    def emit(self, w, g):
        t = g.tensors[self.inputs[0]]
        out = g.tensors[self.outputs[0]]
        cmp = ">" if self.kind == "max" else "<"
        nan = t.dtype.startswith("float")
        w.comment(f"{self.op_type} axis={self.axis}")
        with lanes(w, t.shape, self.axis) as (oi, base, step):
            best, arg, x = w.fresh("best"), w.fresh("arg"), w.fresh("x")
            w.line(f"{ctype(t.dtype)} {best} = {w.ref(t.name)}[{base}];")
            w.line(f"size_t {arg} = 0;")
            with w.block(f"for (size_t r = 1; r < {t.shape[self.axis]}; ++r)"):
                w.line(f"{ctype(t.dtype)} {x} = {w.ref(t.name)}[{base} + r * {step}];")
                cond = f"{x} {cmp} {best}" + (f" || ({x} != {x} && {best} == {best})" if nan else "")
                w.line(f"if ({cond}) {{ {best} = {x}; {arg} = r; }}")
            w.line(f"{w.ref(out.name)}[{w.index(oi, strides_of(out.shape))}] = static_cast<{ctype(self.index_dtype)}>({arg});")

    def describe(self):
        return f"axis={self.axis}"


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

    def emit(self, w, g):
        t = g.tensors[self.inputs[0]]
        n = t.shape[self.axis]
        src, dst = w.ref(t.name), w.ref(self.outputs[0])
        w.comment(f"{self.op_type} axis={self.axis}{' reverse' if self.reverse else ''}")
        with lanes(w, t.shape, self.axis) as (_, base, step):
            acc = w.fresh("acc")
            w.line(f"{ctype(t.dtype)} {acc} = {init_value(self.kind, t.dtype)};")
            pos = f"({n - 1} - r)" if self.reverse else "r"
            with w.block(f"for (size_t r = 0; r < {n}; ++r)"):
                at = f"{base} + {pos} * {step}"
                w.line(accumulate(self.kind, acc, f"{src}[{at}]", t.dtype))
                w.line(f"{dst}[{at}] = {acc};")

    def describe(self):
        return f"axis={self.axis}"


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

    def emit(self, w, g):
        t = g.tensors[self.inputs[0]]
        n = t.shape[self.axis]
        x, y, T = w.ref(t.name), w.ref(self.outputs[0]), ctype(t.dtype)
        w.comment(f"Softmax axis={self.axis}")
        with lanes(w, t.shape, self.axis) as (_, base, s):
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

    def flops(self, g):
        return 4 * g.tensors[self.inputs[0]].size

    def describe(self):
        return f"axis={self.axis}"
