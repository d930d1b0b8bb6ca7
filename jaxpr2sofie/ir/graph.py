"""The operator graph (SOFIE's RModel): one tensor table and an ordered operator list (the C++
backend plans its memory: cpp/memory.py).

A loop body or a branch is a child Graph (`child`): its own operator list, the same tensor table
(one namespace, one set of weights, every buffer in the Session). The operator owning a child
lists, after its own arguments, every outer tensor the child reads (`free_tensors`), so use-def
questions asked of the parent (`consumers`, liveness) see through the child.
"""
from __future__ import annotations

import numpy as np

from .dims import Sym, canon_shape, evaluate
from .tensor import Tensor, c_identifier, check_dtype



class Graph:
    def __init__(self, name: str):
        self.name = c_identifier(name)
        self.tensors: dict[str, Tensor] = {}
        self.ops: list = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._weight_ids: dict[int, str] = {}
        self._keepalive: list = []   # the arrays behind _weight_ids: their ids stay unique while held
        self.reuse_buffers = False   # C++ option, set by its `reuse_buffers` preparation (cpp/prepare.py)
        self.parent = None
        self.plan_batch = 1          # the batch at which the C++ memory plan compares sizes
        self.max_batch = None        # the Session's default max_batch, when the batch is dynamic
        self.blas = "auto"           # "none": every product through the header's own kernels

    def child(self, inputs=()) -> "Graph":
        """A sub-graph sharing this graph's tensor table and weights; `inputs` are tensors its
        owner fills before running it (loop carries, per-step slices)."""
        c = Graph(self.name)
        c.tensors, c._weight_ids, c._keepalive = self.tensors, self._weight_ids, self._keepalive
        c.inputs, c.parent = list(inputs), self
        return c

    # -- tensors --------------------------------------------------------------
    def unique(self, hint: str) -> str:
        base = c_identifier(hint)
        name, k = base, 1
        while name in self.tensors:
            name = f"{base}_{k}"
            k += 1
        return name

    def add_tensor(self, hint, shape, dtype, kind, data=None, label="") -> str:
        name = self.unique(hint)
        self.tensors[name] = Tensor(name, canon_shape(shape), check_dtype(dtype), kind, data, label or hint)
        return name

    def add_input(self, label, shape, dtype) -> str:
        name = self.add_tensor(label, shape, dtype, "input", label=label)
        self.inputs.append(name)
        return name

    def add_weight(self, label, array) -> str:
        """A tensor whose values are known at conversion time; stored once per distinct array object."""
        key = id(array)
        if key in self._weight_ids:
            return self._weight_ids[key]
        arr = np.require(array, requirements='C')   # keeps 0-d arrays 0-d
        name = self.add_tensor(label, arr.shape, arr.dtype, "weight", data=arr, label=label)
        self._weight_ids[key] = name
        self._keepalive.append(array)
        return name

    # -- operators ------------------------------------------------------------
    def add_op(self, op, hint: str | None = None) -> list[str]:
        specs = op.infer(self)
        stem = hint or op.op_type.lower()
        op.outputs = [self.add_tensor(stem if len(specs) == 1 else f"{stem}_{k}", s, d, "intermediate")
                      for k, (s, d) in enumerate(specs)]
        for key, (s, d) in op.scratch(self).items():
            op.scratch_names[key] = self.add_tensor(f"{stem}_{key}", s, d, "intermediate")
        self.ops.append(op)
        return op.outputs

    def refresh_scratch(self, op) -> None:
        """New attributes (a Conv's padding, its algorithm) may change the scratch buffers it asks for."""
        need = op.scratch(self)
        for key in [k for k in op.scratch_names if k not in need]:
            del op.scratch_names[key]
        for key, (shape, dtype) in need.items():
            name = op.scratch_names.get(key)
            if name is None or tuple(self.tensors[name].shape) != tuple(shape):
                op.scratch_names[key] = self.add_tensor(f"{op.outputs[0]}_{key}", shape, dtype, "intermediate")

    def walk(self):
        """Every operator, those inside loop bodies and branches included (parents first)."""
        for op in self.ops:
            yield op
            for sub in op.subgraphs():
                yield from sub.walk()

    def producer(self, name: str):
        for op in self.ops:
            if name in op.outputs:
                return op
        return None

    def consumers(self, name: str) -> list:
        return [op for op in self.ops if name in op.inputs]

    def free_tensors(self) -> list:
        """Tensors this (child) graph reads but neither produces nor receives as an input."""
        own = set(self.inputs) | {o for op in self.ops for o in op.outputs}
        reads = [n for op in self.ops for n in op.inputs] + [o for o in self.outputs if o]
        return [n for n in dict.fromkeys(reads) if n not in own]

    def prune(self) -> None:
        """Drop operators whose outputs nobody reads (inside sub-graphs too)."""
        changed = True
        while changed:
            for op in self.ops:
                for sub in op.subgraphs():
                    sub.prune()
                op.refresh()
            used = {o for o in self.outputs if o}
            for op in self.ops:
                used.update(op.inputs)
            keep = [op for op in self.ops if any(o in used for o in op.outputs)]
            changed = len(keep) != len(self.ops)
            self.ops = keep

    def remove_unused(self) -> None:
        """Drop operators whose outputs nobody reads, and tensors nobody references."""
        self.prune()
        live = set(self.inputs) | set(self.outputs)
        for op in self.walk():
            live.update(getattr(op, "internal", ()))   # a fused loop's register values
        for op in self.ops:
            live.update(touched(op))
        for n in [n for n in self.tensors if n not in live]:
            del self.tensors[n]   # in place: child graphs share the table

    @property
    def dynamic(self) -> bool:
        """Whether the batch is chosen at run time (some input shape holds a dims.Sym)."""
        return any(isinstance(d, Sym) for n in self.inputs for d in self.tensors[n].shape)

    def weights(self) -> list[Tensor]:
        return [t for t in self.tensors.values() if t.kind == "weight"]

    def view_bases(self) -> dict:
        """{tensor: the tensor whose storage it is}: views (Reshape and friends) share their input's."""
        base = {name: name for name in self.tensors}
        for op in self.walk():
            if op.aliases_input:
                base[op.outputs[0]] = base[op.inputs[0]]
        return base

    def nbytes(self, name: str, batch: int | None = None):
        """Bytes of a tensor: an int, or a dims.Sym when it depends on the batch (unless `batch` is given)."""
        t = self.tensors[name]
        n = t.size * np.dtype(t.dtype).itemsize
        return n if batch is None else evaluate(n, batch)


def graphs(g) -> list:
    """A graph and every sub-graph in it (loop bodies, branches), innermost first."""
    out = []
    for op in g.ops:
        for sub in op.subgraphs():
            out += graphs(sub)
    return out + [g]


def touched(op) -> list:
    """Every tensor an operator reads or writes, through its sub-graphs; its outputs first, so a
    planner places them before anything it reads is released."""
    names = [*op.outputs, *op.scratch_names.values()]
    for sub in op.subgraphs():
        names += sub.inputs
        for inner in sub.ops:
            names += touched(inner)
        names += [o for o in sub.outputs if o]
    names += op.inputs
    return list(dict.fromkeys(names))
