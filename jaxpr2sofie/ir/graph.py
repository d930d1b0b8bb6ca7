"""The operator graph (SOFIE's RModel): one tensor table, an ordered operator list, the memory plan.

A loop body or a branch is a child Graph (`child`): its own operator list, the same tensor table
(one namespace, one set of weights, every buffer in the Session). The operator owning a child
lists, after its own arguments, every outer tensor the child reads (`free_tensors`), so use-def
questions asked of the parent (`consumers`, liveness) see through the child.
"""
from __future__ import annotations

import numpy as np

from .dims import Sym, canon_shape, evaluate
from .tensor import Tensor, c_identifier, check_dtype


ARENA_ALIGN = 64   # bytes: every buffer of the arena starts on a cache line


class Graph:
    def __init__(self, name: str):
        self.name = c_identifier(name)
        self.tensors: dict[str, Tensor] = {}
        self.ops: list = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._weight_ids: dict[int, str] = {}
        self._keepalive: list = []   # the arrays behind _weight_ids: their ids stay unique while held
        self.reuse_buffers = False   # set by the `reuse_buffers` pass
        self.parent = None
        self.plan_batch = 1          # the batch at which the memory plan compares sizes
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

    # -- memory plan ----------------------------------------------------------
    def plan(self) -> dict:
        """Decide each tensor's buffer: {tensor: base tensor whose storage it uses}.

        Views (Reshape and friends) share their input's storage. Graph outputs are written
        straight into the caller's memory, so they must be non-view intermediates (the
        `materialize_outputs` pass guarantees that).
        """
        base = {name: name for name in self.tensors}
        for op in self.walk():
            if op.aliases_input:
                base[op.outputs[0]] = base[op.inputs[0]]
        for op in self.walk():   # loop carries the body may update in place (no copy per step)
            for new, state in in_place_carries(self, op, base):
                for name, b in base.items():
                    if b == new:
                        base[name] = base[state]
        return base

    def buffer_plan(self) -> tuple:
        """Storage for the intermediates: ([tensor names per buffer], {tensor: buffer index}).

        Buffers are regions of one arena (see `arena`), so tensors of any dtype may share one.
        Without reuse every intermediate owns a buffer. With reuse, a buffer returns to a free
        pool after the last operator that reads the tensor (or a view of it); an operator's
        outputs and scratch are placed *before* its inputs are released, so no operator ever
        writes into memory it is still reading. Sub-graphs are planned in line (see `events`):
        what a loop or branch reads from outside, its carries and its outputs stay alive for the
        whole operator; a body's own intermediates live only within one pass over the body, so
        they share buffers with each other, and the branches of an If share memory. Sizes that
        depend on the run-time batch are compared at `plan_batch` (the example batch).
        """
        own = self.allocated()
        if not self.reuse_buffers:
            return [[t.name] for t in own], {t.name: k for k, t in enumerate(own)}
        base = self.plan()
        owned = {t.name for t in own}
        steps = [[n for n in names if base.get(n, n) in owned] for op in self.ops for names in events(op)]
        last = {}
        for i, names in enumerate(steps):
            for name in names:
                last[base.get(name, name)] = i
        slots, sizes, free, assign = [], [], [], {}
        for i, names in enumerate(steps):
            for name in names:
                if name not in owned or name in assign:
                    continue
                need = self.nbytes(name, self.plan_batch)
                if free:   # the smallest free buffer that holds it, else the largest one, grown
                    big = [k for k in free if sizes[k] >= need]
                    k = min(big, key=lambda k: sizes[k]) if big else max(free, key=lambda k: sizes[k])
                    free.remove(k)
                    sizes[k] = max(sizes[k], need)
                    slots[k].append(name)
                else:
                    k = len(slots)
                    slots.append([name])
                    sizes.append(need)
                assign[name] = k
            for name, k in assign.items():
                if last.get(name) == i and k not in free:
                    free.append(k)
        return slots, assign

    def nbytes(self, name: str, batch: int | None = None):
        """Bytes of a tensor: an int, or a dims.Sym when it depends on the batch (unless `batch` is given)."""
        t = self.tensors[name]
        n = t.size * np.dtype(t.dtype).itemsize
        return n if batch is None else evaluate(n, batch)

    def arena(self, batch: int | None = None) -> tuple:
        """The one allocation holding every intermediate: ([byte size per buffer], total bytes), each
        buffer at a 64-byte aligned offset; for `batch` given, as numbers for that batch."""
        slots, _ = self.buffer_plan()
        sizes = [[self.nbytes(n, batch) for n in names] for names in slots]
        total = sum(-(-max(s) // ARENA_ALIGN) * ARENA_ALIGN for s in sizes) if batch is not None else None
        return sizes, total

    def allocated(self) -> list[Tensor]:
        """Intermediates that need storage of their own inside the Session."""
        base = self.plan()
        outs = set(self.outputs)
        return [t for n, t in self.tensors.items()
                if t.kind == "intermediate" and base[n] == n and n not in outs]


def graphs(g) -> list:
    """A graph and every sub-graph in it (loop bodies, branches), innermost first."""
    out = []
    for op in g.ops:
        for sub in op.subgraphs():
            out += graphs(sub)
    return out + [g]


def in_place_carries(g, loop, base) -> list:
    """(new carry, carry state) pairs of a Loop whose body may write the new value straight into
    the state's buffer, so that no copy follows each step. Safe when the operator producing the new
    value is the last one in the body to read the state (through any view), reads it, if at all,
    element for element (a same-shape elementwise operator), and no body output is the state."""
    body, nc = getattr(loop, "body", None), getattr(loop, "n_carry", 0)
    if body is None or not nc:
        return []
    outs = [o for o in body.outputs if o]
    pairs = []
    for state, new in zip(body.inputs[:nc], body.outputs[:nc]):
        sb = base[state]
        if (not new or new in body.inputs or base[new] != new or body.outputs[:nc].count(new) != 1
                or any(base.get(o, o) == sb for o in outs)):
            continue
        k = next((i for i, op in enumerate(body.ops) if new in op.outputs), None)
        if k is None or body.ops[k].aliases_input or body.ops[k].subgraphs():
            continue

        def reads(op):
            return {n for n in touched(op) if n not in op.outputs and base.get(n, n) == sb}
        if any(reads(op) for op in body.ops[k + 1:]):
            continue
        producer, shape = body.ops[k], g.tensors[new].shape
        read = reads(producer)
        if read and not (getattr(producer, "elementwise", False) and read == {state}
                         and all(g.tensors[a].shape == shape for a in producer.inputs)):
            continue
        pairs.append((new, state))
    return pairs


def events(op) -> list:
    """The memory plan's view of an operator: a list of steps, each the tensors touched then.

    A plain operator is one step. An operator with sub-graphs opens and closes with a step
    touching everything that must survive the whole operator (its inputs, including the outer
    tensors its sub-graphs read, its outputs, scratch and loop state), and runs each sub-graph's
    operators as steps in between, then a step reading that sub-graph's outputs (copied out at
    its end). Every pass over a body rewrites an intermediate before reading it, so lifetimes
    within one pass are all the plan needs; branches run one at a time, so theirs may overlap.
    """
    subs = op.subgraphs()
    if not subs:
        return [touched(op)]
    pinned = list(dict.fromkeys([*op.outputs, *op.scratch_names.values(), *op.inputs,
                                 *(n for sub in subs for n in sub.inputs)]))
    steps = [pinned]
    for sub in subs:
        for inner in sub.ops:
            steps += events(inner)
        steps.append([o for o in sub.outputs if o])
    steps.append(pinned)
    return steps


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
