"""Pooling (SOFIE's ROperator_Pool): one N-D sliding-window reduction, and the window arithmetic
it shares with Conv.

A window may span any dimension (batch and channels too), so pooling has no layout of its own.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from ..tensor import ctype, strides_of
from .base import Op
from .reduce import accumulate, init_value


@dataclass(frozen=True)
class Window:
    """One dimension of a sliding window, in XLA's terms.

    The input is dilated (`base_dilation - 1` holes between elements), padded by `lo`/`hi`
    (negative crops), then a window of `window` taps spaced `window_dilation` apart slides by
    `stride`. Output position o, tap k reads dilated position p = o*stride + k*window_dilation - lo,
    a real element only if 0 <= p < dilated size and p is a multiple of base_dilation.
    """
    size: int
    window: int
    stride: int = 1
    lo: int = 0
    hi: int = 0
    base_dilation: int = 1
    window_dilation: int = 1

    @property
    def dilated(self) -> int:
        return (self.size - 1) * self.base_dilation + 1 if self.size else 0

    @property
    def out(self) -> int:
        span = self.dilated + self.lo + self.hi
        reach = (self.window - 1) * self.window_dilation + 1
        return (span - reach) // self.stride + 1 if span >= reach and self.window > 0 else 0

    def _last(self) -> int:
        return (self.out - 1) * self.stride + (self.window - 1) * self.window_dilation - self.lo

    @property
    def low_check(self) -> bool:
        return self.out > 0 and -self.lo < 0

    @property
    def high_check(self) -> bool:
        return self.out > 0 and self._last() > self.dilated - 1

    @property
    def checked(self) -> bool:
        """Whether some (output, tap) pair falls on padding or a dilation hole."""
        return self.low_check or self.high_check or self.base_dilation > 1


def window_access(w, windows, outs, taps, strides, base_names=(), base_strides=()):
    """Index expression of the element tap `taps` of output `outs` reads, and the C++ conditions
    under which that element is real (empty: always).

    Dimensions that never leave the input fold into one linear index (no branch in the loop);
    the others get a position variable and bounds checks.
    """
    names, steps, offset = list(base_names), list(base_strides), 0
    extra, conds = [], []
    for win, o, k, st in zip(windows, outs, taps, strides):
        if not win.checked:
            names += [o, k]
            steps += [win.stride * st, win.window_dilation * st]
            offset -= win.lo * st
            continue
        p = w.fresh("p")
        shift = f" - {win.lo}" if win.lo > 0 else (f" + {-win.lo}" if win.lo < 0 else "")
        w.line(f"const std::int64_t {p} = static_cast<std::int64_t>({w.index([o, k], [win.stride, win.window_dilation])}){shift};")
        if win.low_check:
            conds.append(f"{p} >= 0")
        if win.high_check:
            conds.append(f"{p} < {win.dilated}")
        pos = p
        if win.base_dilation > 1:
            conds.append(f"{p} % {win.base_dilation} == 0")
            pos = f"({p} / {win.base_dilation})"
        if st:
            extra.append(pos if st == 1 else f"{pos} * {st}")
    index = w.index(names, steps, offset)
    if extra:
        index = " + ".join(([] if index == "0" else [index]) + extra)
    return index, conds


_POOL_NAMES = {"max": "MaxPool", "min": "MinPool", "sum": "SumPool", "prod": "ProdPool"}


@dataclass(eq=False)
class Pool(Op):
    """out[o] = init (+) every real input element under window o; padding and dilation holes are
    skipped, which is what XLA computes (it differs from "padding holds init" only for a
    non-identity init of add/mul). `init` None means the identity of `kind`.
    """
    kind: str = "max"
    window: tuple = ()
    strides: tuple = ()
    padding: tuple = ()
    base_dilation: tuple = ()
    window_dilation: tuple = ()
    init: object = None

    @property
    def op_type(self):
        return _POOL_NAMES[self.kind]

    def windows(self, g):
        shape = g.tensors[self.inputs[0]].shape
        return [Window(n, int(k), int(s), int(lo), int(hi), int(bd), int(wd))
                for n, k, s, (lo, hi), bd, wd in zip(shape, self.window, self.strides, self.padding,
                                                     self.base_dilation, self.window_dilation)]

    def infer(self, g):
        return [(tuple(win.out for win in self.windows(g)), g.tensors[self.inputs[0]].dtype)]

    def emit(self, w, g):
        x = g.tensors[self.inputs[0]]
        out = g.tensors[self.outputs[0]]
        wins = self.windows(g)
        w.comment(f"{self.op_type} {self.describe()}")
        if out.size == 0:
            return
        init = init_value(self.kind, x.dtype) if self.init is None else w.literal(self.init, x.dtype)
        with w.loops(out.shape, stem="o") as o:
            acc = w.fresh("acc")
            w.line(f"{ctype(x.dtype)} {acc} = {init};")
            with w.loops([win.window for win in wins], stem="k") as k:
                index, conds = window_access(w, wins, o, k, strides_of(x.shape))
                v = w.fresh("v")
                with w.block(f"if ({' && '.join(conds)})") if conds else nullcontext():
                    w.line(f"const {ctype(x.dtype)} {v} = {w.ref(x.name)}[{index}];")
                    w.line(accumulate(self.kind, acc, v, x.dtype))
            w.line(f"{w.ref(out.name)}[{w.index(o, strides_of(out.shape))}] = {acc};")

    def flops(self, g):
        taps = 1
        for k in self.window:
            taps *= int(k)
        return g.tensors[self.outputs[0]].size * taps

    def describe(self):
        parts = [f"window={tuple(self.window)}"]
        for label, value, unit in (("strides", self.strides, 1), ("base_dilation", self.base_dilation, 1),
                                   ("window_dilation", self.window_dilation, 1)):
            if any(v != unit for v in value):
                parts.append(f"{label}={tuple(value)}")
        if any(p != (0, 0) for p in self.padding):
            parts.append(f"pads={tuple(self.padding)}")
        if self.init is not None:
            parts.append(f"init={self.init}")
        return " ".join(parts)


@dataclass(eq=False)
class SelectAndScatterAdd(Op):
    """The gradient of max (min) pooling: inputs [source (one value per window), operand]; each
    source value is added at the operand position its window selects (the first maximum, as XLA
    picks with `ge`; `le` for min). Padding is never selected."""
    select: str = "ge"
    window: tuple = ()
    strides: tuple = ()
    padding: tuple = ()

    def windows(self, g):
        shape = g.tensors[self.inputs[1]].shape
        return [Window(int(n), int(k), int(s), int(lo), int(hi))
                for n, k, s, (lo, hi) in zip(shape, self.window, self.strides, self.padding)]

    def infer(self, g):
        src, x = (g.tensors[n] for n in self.inputs)
        if tuple(win.out for win in self.windows(g)) != tuple(src.shape):
            raise ValueError(f"source {src.shape} does not match the windows of {x.shape}")
        return [(x.shape, src.dtype)]

    def emit(self, w, g):
        src, x = (g.tensors[n] for n in self.inputs)
        out = w.ref(self.outputs[0])
        wins = self.windows(g)
        T = ctype(x.dtype)
        w.comment(f"SelectAndScatterAdd select={self.select} window={tuple(self.window)}")
        w.line(f"std::fill_n({out}, {x.size}, ({ctype(src.dtype)})0);")
        if src.size == 0:
            return
        with w.loops(src.shape, stem="o") as o:
            best, at = w.fresh("best"), w.fresh("at")
            w.line(f"{T} {best} = 0;")
            w.line(f"std::int64_t {at} = -1;")
            with w.loops([win.window for win in wins], stem="k") as k:
                index, conds = window_access(w, wins, o, k, strides_of(x.shape))
                with w.block(f"if ({' && '.join(conds)})") if conds else nullcontext():
                    v = w.fresh("v")
                    w.line(f"const {T} {v} = {w.ref(x.name)}[{index}];")
                    # XLA keeps the current pick while select(current, candidate) holds
                    keep = f"{best} >= {v}" if self.select == "ge" else f"{best} <= {v}"
                    with w.block(f"if ({at} < 0 || !({keep}))"):
                        w.line(f"{best} = {v};")
                        w.line(f"{at} = static_cast<std::int64_t>({index});")
            w.line(f"if ({at} >= 0)")
            w.line(f"   {out}[{at}] += {w.ref(src.name)}[{w.index(o, strides_of(src.shape))}];")

    def describe(self):
        return f"select={self.select} window={tuple(self.window)} strides={tuple(self.strides)}"
