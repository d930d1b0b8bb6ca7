"""The export context every rule receives: ONNX values for graph tensors, node creation, constants,
and the few shape helpers (reshape, transpose, slice, pad) several rules share.

A rule is `rule(b, op) -> [onnx value per op output]`, registered with `@exports(OpClass)`. It
never names its final value: the driver renames it to the graph tensor's name, so Netron shows
the same names as `SofieModel.summary()`.
"""
from __future__ import annotations

import numpy as np

from ..ir.dims import Sym, per_event
from ..ir.ops.base import rule_registry
from ..ir.tensor import broadcast_shapes, fresh_name


# ONNX Slice clamps an `end` this small to "before the first element", whatever the dim size:
# the only way to write a reversed slice that runs through index 0.
BEFORE_START = np.iinfo(np.int64).min



def symbolic(d) -> bool:
    """Whether a dimension is known only at run time (the batch: a dims.Sym, or a dim_param name)."""
    return isinstance(d, (str, Sym))


def dim_param(d):
    """An ONNX dimension: an int, or the dim_param name of a run-time size ("N", "2*N")."""
    return repr(d) if isinstance(d, Sym) else d

class NotExportable(Exception):
    """Raised by a rule for an operator configuration it cannot express; `reason` says which."""


RULES, exports = rule_registry("ONNX")


def _narrow_int(dtype) -> bool:
    return dtype is not None and np.dtype(dtype).kind in "iu" and np.dtype(dtype).itemsize < 8


def _contiguous(a) -> np.ndarray:
    return np.asarray(a, order="C")   # unlike np.ascontiguousarray, keeps a 0-d array 0-d


def onnx_dtype(dtype) -> int:
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# Who reads the export: "onnx" (any runtime: the plainest standard form) or "sofie" (SOFIE's
# parser: the same maths in standard forms SOFIE reads correctly; see SOFIE_TRAPS in __init__.py)
TARGETS = ("onnx", "sofie")


class Builder:
    def __init__(self, graph, opset: int, target: str = "onnx"):
        self.g, self.opset, self.target = graph, opset, target
        self.nodes: list = []
        self.inits: dict = {}          # initializer name -> numpy array
        self.env: dict = {}            # graph tensor name -> ONNX value name
        self.meta: dict = {}           # ONNX value -> (shape, dtype name), where known
        self.taken = set(graph.tensors)
        self.origin = ""               # of the operator being exported, recorded on its nodes
        self.rename = True             # bind() may rename a value to its tensor's name
        self._consts: dict = {}
        self._views: dict = {}
        self._transposed: dict = {}    # value -> (source, perm) of a Transpose node made here
        # value -> (n, make): a sum over n elements whose division by n `make()` spells as one mean
        # operator (sum pooling + divide = AveragePool, ReduceSum + divide = ReduceMean)
        self.sums: dict = {}
        self.biasable: dict = {}       # output of a Conv node without bias -> that node
        self.negations: dict = {}      # boolean value made by a Not node -> its input
        self.batch_sources = list(graph.inputs)   # model inputs: where the run-time batch N is read
        self.uses: dict = {}
        for op in graph.ops:
            for name in op.inputs:
                self.uses[name] = self.uses.get(name, 0) + 1
        for name in graph.outputs:
            self.uses[name] = self.uses.get(name, 0) + 1

    def child(self, sub) -> "Builder":
        """A Builder for sub-graph `sub` (a Loop or If body): names are unique across the whole
        model (ONNX scoping), and values of the enclosing scope are known with their shapes."""
        c = Builder(sub, self.opset, self.target)
        c.batch_sources = self.batch_sources
        c.taken = self.taken
        c.meta = self.meta
        c.env = dict(self.env)
        return c

    # -- names and nodes ----------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        return fresh_name(hint, self.taken)

    def node(self, op_type, inputs, hint=None, shape=None, dtype=None, n_out=1, **attrs):
        from onnx import helper
        outs = [self.fresh(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.fresh("n_" + (hint or op_type)),
                                           doc_string=self.origin, **attrs))
        dtype = dtype or (self.dtype(inputs[0]) if inputs else None)
        if shape is not None or dtype is not None:   # the dtype is worth knowing even without a shape
            for o in outs:
                self.meta[o] = (None if shape is None else tuple(shape), None if dtype is None else np.dtype(dtype).name)
        return outs[0] if n_out == 1 else outs

    def shape(self, v):
        return self.meta[v][0] if v in self.meta else None

    def dtype(self, v):
        return self.meta[v][1] if v in self.meta else None

    # -- constants and graph tensors -----------------------------------------------------------
    def const(self, array, hint="const") -> str:
        arr = _contiguous(array)
        key = (arr.dtype.name, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh(hint)
            self.inits[name] = arr
            self.meta[name] = (arr.shape, arr.dtype.name)
            self._consts[key] = name
        return self._consts[key]

    def scalar(self, value, dtype) -> str:
        return self.const(np.asarray(value, dtype=dtype), "scalar")

    def ints(self, values) -> str:
        values = list(values)
        if any(symbolic(v) for v in values):
            raise NotExportable(f"a shape or index list {values} with a symbolic dimension: this operator "
                                "has no ONNX export for run-time sizes yet")
        return self.const(np.asarray(values, dtype=np.int64), "ints")

    def value(self, name: str) -> str:
        """The ONNX value of a graph tensor; a weight becomes an initializer named after it."""
        if name not in self.env:
            t = self.g.tensors[name]
            if t.data is None:
                raise KeyError(f"tensor {name} used before it is computed")
            self.inits[name] = _contiguous(t.data)
            self.meta[name] = (tuple(t.shape), t.dtype)
            self.env[name] = name
        return self.env[name]

    def view(self, name, shape=None, perm=None, then=None, flip=()):
        """Graph tensor `name` reshaped to `shape`, permuted by `perm`, reshaped to `then`, with axes
        `flip` reversed. A weight is transformed at export time (the initializer keeps its key-path
        name when this is its only use); a run-time tensor gets nodes."""
        t = self.g.tensors[name]
        if t.data is not None and name not in self.env:
            key = (name, shape, perm, then, tuple(flip))
            if key not in self._views:
                arr = np.asarray(t.data).reshape(shape or t.shape)
                arr = np.transpose(arr, perm) if perm is not None else arr
                arr = arr.reshape(then) if then is not None else arr
                arr = np.flip(arr, tuple(flip)) if flip else arr
                if arr.shape == tuple(t.shape) and perm is None and not flip:
                    return self.value(name)
                single = self.uses.get(name, 0) == 1
                label = name if single else self.fresh(f"{name}_view")
                self.inits[label] = _contiguous(arr)
                self.meta[label] = (arr.shape, arr.dtype.name)
                self._views[key] = label
            return self._views[key]
        v = self.value(name)
        if shape is not None:
            v = self.reshape(v, shape)
        if perm is not None:
            v = self.transpose(v, perm)
        if then is not None:
            v = self.reshape(v, then)
        if flip:
            n = self.shape(v)
            v = self.slice(v, {a: (-1, BEFORE_START, -1) for a in flip}, shape=n)
        return v

    # -- shape helpers -------------------------------------------------------------------------
    def reshape(self, v, shape):
        shape = tuple(d if symbolic(d) else int(d) for d in shape)
        if self.shape(v) == shape:
            return v
        runtime = [k for k, d in enumerate(shape) if symbolic(d)]
        if len(runtime) > 1:
            raise NotExportable(f"reshape to {shape}: more than one symbolic dimension")
        target = [-1 if symbolic(d) else d for d in shape]   # ONNX infers the one run-time size
        if 0 in target:
            # A 0 in Reshape's shape means "keep the input's size" unless allowzero is set; a
            # zero-size target (a max over x[:, :0]) needs the literal 0.
            if runtime:
                raise NotExportable(f"reshape to {shape}: a zero-size dimension next to a symbolic one")
            return self.node("Reshape", [v, self.ints(target)], hint="reshape", shape=shape, dtype=self.dtype(v),
                             allowzero=1)
        return self.node("Reshape", [v, self.ints(target)], hint="reshape", shape=shape, dtype=self.dtype(v))

    def transpose(self, v, perm):
        """A Transpose; two in a row (NHWC -> NCHW around a Conv, and back) fold into one or none."""
        perm = tuple(int(p) for p in perm)
        if v in self._transposed:
            src, first = self._transposed[v]
            v, perm = src, tuple(first[p] for p in perm)
        if perm == tuple(range(len(perm))):
            return v
        s = self.shape(v)
        out = self.node("Transpose", [v], hint="transpose", perm=list(perm),
                        shape=None if s is None else tuple(s[p] for p in perm), dtype=self.dtype(v))
        self._transposed[out] = (v, perm)
        return out

    def slice(self, v, spec, shape=None):
        """spec: {axis: (start, end, step)}; `shape` the input shape (for the output shape)."""
        spec = {a: s for a, s in spec.items()}
        if not spec:
            return v
        shape = shape or self.shape(v)
        if self.target == "sofie" and shape is not None:
            v, spec, shape = self._whole_steps(v, spec, shape)
        axes = sorted(spec)
        ins = [v, self.ints(spec[a][0] for a in axes), self.ints(spec[a][1] for a in axes), self.ints(axes),
               self.ints(spec[a][2] for a in axes)]
        out_shape = None
        if shape is not None:
            out_shape = list(shape)
            for a in axes:
                out_shape[a] = len(range(*slice(*(None if x == BEFORE_START else x for x in spec[a])).indices(shape[a])))
        return self.node("Slice", ins, hint="slice", shape=out_shape, dtype=self.dtype(v))

    def _whole_steps(self, v, spec, shape):
        """For SOFIE: its Slice sizes the output floor((end - start) / step) but writes every step-th
        element up to `end` (a heap overflow when the step does not divide the span): each forward
        span is made a multiple of its step, zero-padding the end of the axis where that runs past it."""
        spec, over = dict(spec), [0] * len(shape)
        for a, (start, end, step) in spec.items():
            if step > 1 and not symbolic(shape[a]) and 0 <= start < shape[a]:
                count = -(-(min(end, shape[a]) - start) // step)
                spec[a] = (start, start + count * step, step)
                over[a] = max(0, start + count * step - shape[a])
        if not any(over):
            return v, spec, shape
        v = self.pad(v, [0] * len(shape), over)
        return v, spec, tuple(n + o for n, o in zip(shape, over))

    def pad(self, v, lo, hi, value=None):
        """Constant padding by non-negative (lo, hi) per axis; `value` an ONNX scalar value or None (zero)."""
        if not any(lo) and not any(hi):
            return v
        s = self.shape(v)
        ins = [v, self.ints(list(lo) + list(hi))] + ([value] if value is not None else [])
        out = None if s is None else tuple(n + a + b for n, a, b in zip(s, lo, hi))
        return self.node("Pad", ins, hint="pad", shape=out, dtype=self.dtype(v), mode="constant")

    def pad_or_crop(self, v, lo, hi, value=None):
        """Padding that may be negative (crop): a Slice for the negative parts, a Pad for the rest."""
        s = self.shape(v)
        crop = {a: (-l if l < 0 else 0, s[a] + h if h < 0 else s[a], 1)
                for a, (l, h) in enumerate(zip(lo, hi)) if l < 0 or h < 0}
        v = self.slice(v, crop, shape=s)
        return self.pad(v, [max(0, l) for l in lo], [max(0, h) for h in hi], value)

    def edge_pad(self, v, lo, hi):
        """Padding by non-negative (lo, hi) per axis with copies of the edge elements, as Slices and
        one Concat per axis (for SOFIE, whose Pad has only the constant mode)."""
        for axis, (a, c) in enumerate(zip(lo, hi)):
            if not a and not c:
                continue
            s = self.shape(v)
            first = self.slice(v, {axis: (0, 1, 1)}, shape=s)
            last = self.slice(v, {axis: (s[axis] - 1, s[axis], 1)}, shape=s)
            out = tuple(n + (a + c if k == axis else 0) for k, n in enumerate(s))
            v = self.node("Concat", [first] * a + [v] + [last] * c, hint="edge_pad", shape=out, dtype=self.dtype(v),
                          axis=axis)
        return v

    def dilate(self, v, axis, step, value=None):
        """Insert `step - 1` copies of `value` between neighbours along `axis` (XLA interior padding)."""
        s = self.shape(v)
        n = s[axis]
        if step == 1 or n <= 1:
            return v
        split = tuple(s[:axis + 1]) + (1,) + tuple(s[axis + 1:])
        v = self.reshape(v, split)
        lo = [0] * len(split)
        hi = [0] * len(split)
        hi[axis + 1] = step - 1
        v = self.pad(v, lo, hi, value)
        v = self.reshape(v, tuple(s[:axis]) + (n * step,) + tuple(s[axis + 1:]))
        return self.slice(v, {axis: (0, (n - 1) * step + 1, 1)})

    def expand(self, v, shape):
        shape = tuple(shape)
        if self.shape(v) == shape:
            return v
        dynamic = any(symbolic(d) for d in shape)
        src = self.shape(v)
        if self.target == "sofie" and dynamic and src is not None and len(src) == len(shape):
            kept = [k for k, (a, b) in enumerate(zip(src, shape)) if not (a == 1 and b == 1)]
            if len(kept) < len(shape):   # SOFIE_TRAPS "Expand at a run-time batch": without the axes of size 1
                v = self.reshape(v, tuple(src[k] for k in kept))
                v = self.expand(v, tuple(shape[k] for k in kept))
                return self.reshape(v, shape)
        target = self.shape_value(shape) if dynamic else self.ints(shape)
        return self.node("Expand", [v, target], hint="expand", shape=shape, dtype=self.dtype(v))

    def shape_value(self, shape) -> str:
        """A 1-D int64 tensor holding `shape` at run time: the batch N is read from the shape of a
        model input that carries it (Shape), times its coefficient."""
        parts = []
        for d in shape:
            if not symbolic(d):
                parts.append(self.ints([d]))
                continue
            lin = per_event(d) if isinstance(d, Sym) else None
            if lin is None or lin[1] != 0:
                raise NotExportable(f"a run-time dimension {d!r} that is not a multiple of the batch")
            n = self.batch_value()
            parts.append(n if lin[0] == 1 else self.ew("Mul", n, self.ints([lin[0]])))
        return self.node("Concat", parts, hint="shape", shape=(len(shape),), dtype="int64", axis=0)

    def batch_value(self) -> str:
        """The run-time batch N as a 1-element int64 tensor, read from a model input's shape."""
        for name in self.batch_sources:
            for k, d in enumerate(self.g.tensors[name].shape):
                if d == Sym.batch():
                    return self.node("Shape", [self.value(name)], hint="batch", shape=(1,), dtype="int64",
                                     start=k, end=k + 1)
        raise NotExportable("no model input has the run-time batch N as a dimension to read it from")

    def cast(self, v, dtype):
        if self.dtype(v) == np.dtype(dtype).name:
            return v
        return self.node("Cast", [v], hint="cast", shape=self.shape(v), dtype=dtype, to=onnx_dtype(dtype))

    def ew(self, op_type, *xs, dtype=None, **attrs):
        """An elementwise node with numpy broadcasting; its shape is tracked when the inputs' are."""
        if op_type == "Where" and self.target == "sofie" and _narrow_int(self.dtype(xs[1])):
            # SOFIE's Where reads float and int64 values only ("does not yet support input type 6"
            # for int32): the choice is made in int64, exact for every narrower integer
            dt = self.dtype(xs[1])
            y = self.ew("Where", xs[0], self.cast(xs[1], "int64"), self.cast(xs[2], "int64"), dtype="int64")
            return self.cast(y, dt)
        shapes = [self.shape(x) for x in xs]
        shape = broadcast_shapes(shapes) if all(s is not None for s in shapes) else None
        if (self.target == "sofie" and op_type.startswith("Bitwise") and shape is not None
                and any(symbolic(d) for d in shape) and len(set(shapes)) > 1):
            # SOFIE_TRAPS "broadcasting Bitwise* at a run-time batch": the operands expanded first
            xs = tuple(self.expand(self.reshape(x, (1,) * (len(shape) - len(s)) + tuple(s)) if len(s) < len(shape)
                                   else x, shape) for x, s in zip(xs, shapes))
        return self.node(op_type, list(xs), hint=op_type.lower(), shape=shape,
                         dtype=dtype or self.dtype(xs[0]), **attrs)

    def reduce(self, op_type, v, axes, keepdims=0):
        """ReduceX over `axes`: axes are an input for ReduceSum since opset 13, for the others since 18."""
        s = self.shape(v)
        out = None
        if s is not None:
            out = tuple(1 if k in axes else n for k, n in enumerate(s) if keepdims or k not in axes)
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.node(op_type, [v, self.ints(axes)], shape=out, dtype=self.dtype(v), keepdims=keepdims)
        return self.node(op_type, [v], shape=out, dtype=self.dtype(v), axes=list(axes), keepdims=keepdims)

    # -- binding results -----------------------------------------------------------------------
    def bind(self, tensor: str, v: str, first_node: int) -> None:
        """Make `v` the value of graph tensor `tensor`; a value made by this operator's own nodes is
        renamed to the tensor's name."""
        made = [n for n in self.nodes[first_node:] if v in n.output]
        if self.rename and made and v not in self.env.values() and tensor not in self.meta:
            for n in self.nodes[first_node:]:
                for k, o in enumerate(n.output):
                    if o == v:
                        n.output[k] = tensor
                for k, i in enumerate(n.input):
                    if i == v:
                        n.input[k] = tensor
            if v in self.meta:
                self.meta[tensor] = self.meta.pop(v)
            for memo in (self._transposed, self.sums, self.negations):
                if v in memo:
                    memo[tensor] = memo.pop(v)
            v = tensor
        self.env[tensor] = v
