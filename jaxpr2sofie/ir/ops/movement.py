"""Data-movement operators: Reshape (a view), Identity, Transpose, Slice, Reverse, Expand, Pad, Concat.

All but Reshape are one primitive underneath: copy a strided view of the source into a
strided view of the destination. Each operator only computes its views.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dims import DynamicDimError, is_symbolic, show_shape
from ..tensor import numel, strides_of
from .base import Op
from ..rows import same_rows, unbatched, view_rows


@dataclass(eq=False)
class Reshape(Op):
    """A view: same buffer, new shape. Costs nothing at run time."""
    shape: tuple = ()
    aliases_input = True

    def infer(self, g):
        src = g.tensors[self.inputs[0]]
        if numel(self.shape) != src.size:
            if is_symbolic(src.size) and not is_symbolic(numel(self.shape)):
                # JAX traces x.reshape(4, 16, 1) on an (N, 16) input: only N = 4 can satisfy it
                raise DynamicDimError(f"this function fixes the batch: it reshapes {show_shape(src.shape)} to "
                                      f"{show_shape(self.shape)}, which holds {numel(self.shape)} values whatever "
                                      "the batch N is")
            raise ValueError(f"cannot reshape {show_shape(src.shape)} ({src.size} values) to "
                             f"{show_shape(self.shape)} ({numel(self.shape)} values)")
        return [(tuple(self.shape), src.dtype)]

    def describe(self):
        return str(tuple(self.shape))

    def rows(self, g) -> str:
        return view_rows(g, self)


@dataclass(eq=False)
class View(Op):
    """Base of the strided-copy family: subclasses give `view(g)` = (out_shape, src_strides, src_offset)."""

    def view(self, g):
        raise NotImplementedError

    def infer(self, g):
        shape, _, _ = self.view(g)
        return [(tuple(shape), g.tensors[self.inputs[0]].dtype)]


@dataclass(eq=False)
class Identity(View):
    def view(self, g):
        s = g.tensors[self.inputs[0]].shape
        return s, strides_of(s), 0

    def rows(self, g) -> str:
        return view_rows(g, self)


@dataclass(eq=False)
class Transpose(View):
    perm: tuple = ()

    def view(self, g):
        s = g.tensors[self.inputs[0]].shape
        st = strides_of(s)
        return tuple(s[p] for p in self.perm), tuple(st[p] for p in self.perm), 0

    def describe(self):
        return f"perm={tuple(self.perm)}"

    def rows(self, g) -> str:
        return "" if self.perm[0] == 0 else "moves the batch axis"


@dataclass(eq=False)
class Slice(View):
    """Also covers Reverse: a negative step walks a dimension backwards."""
    starts: tuple = ()
    limits: tuple = ()
    steps: tuple = ()

    def view(self, g):
        st = strides_of(g.tensors[self.inputs[0]].shape)
        shape, strides, off = [], [], 0
        for a, b, c, s in zip(self.starts, self.limits, self.steps, st):
            if c > 0:
                n = max(0, -(-(b - a) // c))
            else:
                n = max(0, -(-(a - b) // -c))
            shape.append(n)
            strides.append(s * c)
            off += a * s
        return tuple(shape), tuple(strides), off

    def describe(self):
        return f"{list(zip(self.starts, self.limits, self.steps))}"

    def rows(self, g) -> str:
        s = g.tensors[self.inputs[0]].shape
        whole = self.starts[0] == 0 and self.limits[0] == s[0] and self.steps[0] == 1
        return "" if whole else "slices the batch axis"


def reverse(shape, dims):
    """Slice parameters that reverse `dims` of a tensor of `shape`."""
    starts = tuple(n - 1 if k in dims else 0 for k, n in enumerate(shape))
    limits = tuple(-1 if k in dims else n for k, n in enumerate(shape))
    steps = tuple(-1 if k in dims else 1 for k in range(len(shape)))
    return starts, limits, steps


@dataclass(eq=False)
class Expand(View):
    """broadcast_in_dim: operand dim k becomes output dim bdims[k]; other output dims repeat."""
    shape: tuple = ()
    bdims: tuple = ()

    def view(self, g):
        src = g.tensors[self.inputs[0]].shape
        st = strides_of(src)
        strides = [0] * len(self.shape)
        for k, d in enumerate(self.bdims):
            if src[k] != 1:
                strides[d] = st[k]
        return tuple(self.shape), tuple(strides), 0

    def describe(self):
        return f"to {tuple(self.shape)} dims={tuple(self.bdims)}"

    def rows(self, g) -> str:
        src = g.tensors[self.inputs[0]].shape
        if unbatched(src):
            return same_rows(g, self, [])
        return "" if self.bdims[0] == 0 and src[0] == self.shape[0] else "broadcasts along the batch axis"


@dataclass(eq=False)
class Pad(Op):
    """lax.pad: per dimension (low, high, interior); negative low/high crop."""
    config: tuple = ()
    value: object = None    # Scalar, or None when the pad value is inputs[1] (a run-time scalar)

    def infer(self, g):
        src = g.tensors[self.inputs[0]]
        shape = tuple(lo + hi + n + (max(0, n - 1) * it if it else 0) for n, (lo, hi, it) in zip(src.shape, self.config))
        return [(shape, src.dtype)]

    def describe(self):
        return f"{tuple(self.config)}"

    def rows(self, g) -> str:
        return "" if tuple(self.config[0]) == (0, 0, 0) else "pads the batch axis"


@dataclass(eq=False)
class Concat(Op):
    axis: int = 0

    def infer(self, g):
        shapes = [g.tensors[a].shape for a in self.inputs]
        out = list(shapes[0])
        out[self.axis] = sum(s[self.axis] for s in shapes)
        return [(tuple(out), g.tensors[self.inputs[0]].dtype)]

    def describe(self):
        return f"axis={self.axis}"

    def rows(self, g) -> str:
        return same_rows(g, self, self.inputs) if self.axis != 0 else "concatenates along the batch axis"
