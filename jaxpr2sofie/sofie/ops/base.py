"""The operator base class: shape inference, scratch needs and code generation kept apart."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


def emit_ops(w, g, ops) -> None:
    """Emit operators in order; one whose outputs are all empty (a zero-size slice) has nothing
    to compute, and its loops would compare an unsigned index with 0."""
    for op in ops:
        if op.outputs and all(g.tensors[o].size == 0 for o in op.outputs):
            continue
        if w.fence_before & {*op.outputs, *op.scratch_names.values()}:
            # the arena memory this operator writes held another type before: keep the compiler
            # from moving those reads past these writes (type-based alias analysis would allow it)
            w.line("std::atomic_signal_fence(std::memory_order_seq_cst);")
        op.emit(w, g)


@dataclass(frozen=True)
class Scalar:
    """A compile-time scalar operand, written inline as a literal."""
    value: object
    dtype: str


@dataclass(eq=False)
class Op:
    """One SOFIE-style operator.

    `inputs`/`outputs` are tensor names in the graph. `infer` returns the (shape, dtype)
    of each output from the input tensors; `emit` writes the C++ through the writer.
    An operator never allocates: it may *ask* for scratch tensors (`scratch`), which the
    graph creates and the memory plan places.
    """

    inputs: list
    outputs: list = field(default_factory=list, kw_only=True)
    origin: str = field(default="", kw_only=True)        # primitive and source line it came from
    scratch_names: dict = field(default_factory=dict, kw_only=True)

    aliases_input: ClassVar[bool] = False   # output is a view of inputs[0] (no copy)

    @property
    def op_type(self) -> str:
        return type(self).__name__

    def infer(self, g) -> list:
        raise NotImplementedError

    def scratch(self, g) -> dict:
        """Extra buffers this operator needs while running: {key: (shape, dtype)}."""
        return {}

    def emit(self, w, g) -> None:
        raise NotImplementedError

    # -- operators that own sub-graphs (loops, branches) override these ----------
    def subgraphs(self) -> list:
        """Child graphs whose operators this operator runs (a loop body, the branches of an If)."""
        return []

    def refresh(self) -> None:
        """Recompute `inputs` after a pass changed the sub-graphs (the tensors they read)."""

    def flops(self, g) -> int:
        return 0

    def describe(self) -> str:
        """Attributes worth showing in a summary."""
        return ""
