"""Pooling (SOFIE's ROperator_Pool): one N-D sliding-window reduction, and the window arithmetic
it shares with Conv.

A window may span any dimension (batch and channels too), so pooling has no layout of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Op
from ..rows import NOT_KNOWN


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

    def rows(self, g) -> str:
        batch_axis = (self.window[0], self.strides[0], tuple(self.padding[0]), self.base_dilation[0],
                      self.window_dilation[0])
        return "" if batch_axis == (1, 1, (0, 0), 1, 1) else "has a window over the batch axis"


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

    def describe(self):
        return f"select={self.select} window={tuple(self.window)} strides={tuple(self.strides)}"

    def rows(self, g) -> str:
        return NOT_KNOWN
