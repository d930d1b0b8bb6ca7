"""The operator graph (SOFIE's RModel): one tensor table, an ordered operator list, the memory plan."""
from __future__ import annotations

import numpy as np

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
        self.reuse_buffers = False   # set by the `reuse_buffers` pass

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
        self.tensors[name] = Tensor(name, tuple(shape), check_dtype(dtype), kind, data, label or hint)
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
        arr = np.ascontiguousarray(array)
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

    def producer(self, name: str):
        for op in self.ops:
            if name in op.outputs:
                return op
        return None

    def consumers(self, name: str) -> list:
        return [op for op in self.ops if name in op.inputs]

    def remove_unused(self) -> None:
        """Drop operators whose outputs nobody reads, and tensors nobody references."""
        changed = True
        while changed:
            used = set(self.outputs)
            for op in self.ops:
                used.update(op.inputs)
            keep = [op for op in self.ops if any(o in used for o in op.outputs)]
            changed = len(keep) != len(self.ops)
            self.ops = keep
        live = set(self.inputs) | set(self.outputs)
        for op in self.ops:
            live.update(op.inputs, op.outputs, op.scratch_names.values())
        self.tensors = {n: t for n, t in self.tensors.items() if n in live}

    def weights(self) -> list[Tensor]:
        return [t for t in self.tensors.values() if t.kind == "weight"]

    # -- memory plan ----------------------------------------------------------
    def plan(self) -> dict:
        """Decide each tensor's buffer: {tensor: base tensor whose storage it uses}.

        Views (Reshape and friends) share their input's storage. Graph outputs are written
        straight into the caller's memory, so they must be non-view intermediates (the
        `materialize_outputs` pass guarantees that). A smarter planner (buffer reuse by
        lifetime) slots in here without touching any operator.
        """
        base = {}
        for name in self.tensors:
            base[name] = name
        for op in self.ops:
            if op.aliases_input:
                base[op.outputs[0]] = base[op.inputs[0]]
        return base

    def buffer_plan(self) -> tuple:
        """Storage for the intermediates: ([(dtype, size) per buffer], {tensor: buffer index}).

        Without reuse every intermediate owns a buffer. With reuse, a buffer returns to a free
        pool after the last operator that reads the tensor (or a view of it); an operator's
        outputs and scratch are placed *before* its inputs are released, so no operator ever
        writes into memory it is still reading.
        """
        own = self.allocated()
        if not self.reuse_buffers:
            return [(t.dtype, t.size) for t in own], {t.name: k for k, t in enumerate(own)}
        base = self.plan()
        owned = {t.name for t in own}
        last = {}
        for i, op in enumerate(self.ops):
            for name in list(op.inputs) + list(op.outputs) + list(op.scratch_names.values()):
                b = base.get(name, name)
                if b in owned:
                    last[b] = i
        slots, free, assign = [], [], {}
        for i, op in enumerate(self.ops):
            for name in list(op.outputs) + list(op.scratch_names.values()):
                if name not in owned or name in assign:
                    continue
                t = self.tensors[name]
                fits = [k for k in free if slots[k][0] == t.dtype]
                if fits:   # the smallest buffer that holds it, else the largest one, grown
                    big = [k for k in fits if slots[k][1] >= t.size]
                    k = min(big, key=lambda k: slots[k][1]) if big else max(fits, key=lambda k: slots[k][1])
                    free.remove(k)
                    slots[k] = (t.dtype, max(slots[k][1], t.size))
                else:
                    k = len(slots)
                    slots.append((t.dtype, t.size))
                assign[name] = k
            for name, k in assign.items():
                if last.get(name) == i and k not in free:
                    free.append(k)
        return slots, assign

    def allocated(self) -> list[Tensor]:
        """Intermediates that need storage of their own inside the Session."""
        base = self.plan()
        outs = set(self.outputs)
        return [t for n, t in self.tensors.items()
                if t.kind == "intermediate" and base[n] == n and n not in outs]
