"""The one place where our tensors become SOFIE's: names, dtypes (`ETensorType`), dimensions (`Dim`),
weights (`add_initialized_tensor`), constants and the INT64 shape tensors SOFIE's Reshape, Slice,
Pad and Expand read; plus the few layout helpers several rules share (reshape, transpose).

A rule is `rule(ctx, op) -> [SOFIE tensor name per op output]`, registered with `@builds(OpClass)`.
It appends `ROperator_*` objects through `ctx.add`; the driver keeps only those some model output
depends on (a transpose pair around two convolutions folds to nothing and leaves dead operators).
"""
from __future__ import annotations

import numpy as np

from ..ir.dims import Sym
from ..ir.ops.base import rule_registry
from ..ir.tensor import fresh_name

RULES, builds = rule_registry("RModel")

# numpy dtype name -> sofie.ETensorType member name
ETYPES = {"float32": "FLOAT", "int64": "INT64", "int32": "INT32", "int16": "INT16", "int8": "INT8",
          "uint8": "UINT8", "uint32": "UINT32", "bool": "BOOL"}

BATCH_PARAM = "N"   # the name of the run-time batch in SOFIE's header: Session(file, N), infer(N, ...)


class NotBuildable(Exception):
    """Raised by a rule for an operator configuration SOFIE's bound operators cannot express."""


def sofie_module():
    import sofie
    return sofie


def etype(dtype):
    name = np.dtype(dtype).name
    if name not in ETYPES:
        raise NotBuildable(f"dtype {name} has no SOFIE tensor type")
    return getattr(sofie_module().ETensorType, ETYPES[name])


def sofie_dim(d):
    """One of our dimensions as SOFIE's `Dim`: an int, or the run-time batch N (the one symbolic size
    SOFIE's Session takes)."""
    sofie = sofie_module()
    if isinstance(d, Sym):
        if d != Sym.batch():
            raise NotBuildable(f"a model input dimension {d!r}: SOFIE's inputs take the batch N itself")
        return sofie.Dim(BATCH_PARAM)
    return sofie.Dim(int(d))


class Context:
    def __init__(self, graph, rmodel):
        self.g, self.rm, self.sofie = graph, rmodel, sofie_module()
        self.env: dict = {}            # graph tensor -> SOFIE tensor name
        self.meta: dict = {}           # SOFIE tensor -> (shape, dtype) where known
        self.ops: list = []            # (ROperator, input names, output names), in order
        self.inits: dict = {}          # initialized tensor name -> (array, writable)
        self.taken = set(graph.tensors)
        self.origin = ""
        self._consts: dict = {}
        self._transposed: dict = {}    # tensor made by ctx.transpose -> (source, perm)

    # -- names and operators --------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        return fresh_name(hint, self.taken)

    def add(self, operator, inputs, outputs, shape=None, dtype="float32"):
        """Record a SOFIE operator reading `inputs` and writing `outputs` (names); returns outputs[0]."""
        self.ops.append((operator, [i for i in inputs if i], list(outputs)))
        for o in outputs:
            self.meta[o] = (None if shape is None else tuple(shape), dtype)
        return outputs[0]

    def shape(self, v):
        return self.meta.get(v, (None, None))[0]

    def dtype(self, v):
        return self.meta.get(v, (None, None))[1]

    # -- tensors ---------------------------------------------------------------------------------
    def value(self, name: str) -> str:
        """The SOFIE tensor of a graph tensor; a weight becomes an initialized tensor of its name."""
        if name not in self.env:
            t = self.g.tensors[name]
            if t.data is None:
                raise KeyError(f"tensor {name} used before it is computed")
            self._initialized(name, np.asarray(t.data))
            self.env[name] = name
        return self.env[name]

    def weight(self, name: str, array, hint: str) -> str:
        """A weight rearranged at conversion time (an OIHW kernel, a reshaped bias): a new initialized
        tensor, or the weight itself when the array is its own data."""
        t = self.g.tensors[name]
        array = np.asarray(array)
        if array.shape == tuple(t.shape) and np.array_equal(array, t.data):
            return self.value(name)
        key = ("weight", hint, array.dtype.name, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self._initialized(self.fresh(hint), array)
        return self._consts[key]

    def _initialized(self, name, array, writable=True) -> str:
        array = np.ascontiguousarray(array)
        self.inits[name] = (array, writable)
        self.meta[name] = (array.shape, array.dtype.name)
        return name

    def const(self, array, hint="const") -> str:
        """A small constant (a scalar operand, a pad value) as a one-element-or-more float tensor."""
        array = np.asarray(array)
        if array.ndim == 0:
            array = array.reshape(1)
        key = ("const", array.dtype.name, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self._initialized(self.fresh(hint), array)
        return self._consts[key]

    def ints(self, values, hint="shape") -> str:
        """An INT64 tensor SOFIE reads at code-generation time (a shape, pads, slice bounds); kept out
        of the weight file."""
        values = [int(v) for v in values]
        key = ("ints", tuple(values))
        if key not in self._consts:
            self._consts[key] = self._initialized(self.fresh(hint), np.asarray(values, np.int64), writable=False)
        return self._consts[key]

    # -- layout helpers ---------------------------------------------------------------------------
    def reshape(self, v, shape, out=None):
        """`v` as `shape`: the batch N (at most one dimension that is not an int) becomes -1; a scalar
        is SOFIE's one-element [1]."""
        shape = tuple(shape) or (1,)
        if self.shape(v) == shape and out is None:
            return v
        runtime = [d for d in shape if isinstance(d, Sym)]
        if len(runtime) > 1:
            raise NotBuildable(f"a reshape to {shape}: more than one dimension depends on the batch")
        target = [-1 if isinstance(d, Sym) else int(d) for d in shape]
        s = self.sofie
        out, dims = out or self.fresh(f"{v}_reshaped"), self.ints(target)
        return self.add(s.ROperator_Reshape(s.ReshapeOpMode.Reshape, 0, v, dims, out), [v, dims], [out],
                        shape, self.dtype(v))

    def transpose(self, v, perm, out=None):
        """A Transpose; one that undoes the Transpose which made `v` gives back its source."""
        perm = tuple(int(p) for p in perm)
        if v in self._transposed and out is None:
            src, first = self._transposed[v]
            v, perm = src, tuple(first[p] for p in perm)
        if perm == tuple(range(len(perm))) and out is None:
            return v
        s = self.shape(v)
        out = out or self.fresh(f"{v}_t")
        self.add(self.sofie.ROperator_Transpose(list(perm), v, out), [v], [out],
                 None if s is None else tuple(s[p] for p in perm), self.dtype(v))
        self._transposed[out] = (v, perm)
        return out

    def unary(self, cls, x, hint):
        out = self.fresh(hint)
        return self.add(cls(x, out), [x], [out], self.shape(x), self.dtype(x))
