"""The operator base class: attributes, shape and dtype inference, scratch needs, FLOPs and row
independence. How an operator becomes code lives in each backend, in a rule registered for its class
(cpp/rules.py, onnx/builder.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


def rule_registry(backend: str):
    """A backend's table of rules keyed by operator class, and the decorator that fills it
    (`@emits(Conv)` in cpp/, `@exports(Conv)` in onnx/); a class registered twice is an error."""
    rules: dict = {}

    def register(*classes):
        def add(fn):
            for cls in classes:
                if cls in rules:
                    raise RuntimeError(f"{backend} rule for {cls.__name__} registered twice")
                rules[cls] = fn
            return fn
        return add
    return rules, register


@dataclass(frozen=True)
class Scalar:
    """A compile-time scalar operand, written inline as a literal."""
    value: object
    dtype: str


@dataclass(eq=False)
class Op:
    """One SOFIE-style operator.

    `inputs`/`outputs` are tensor names in the graph. `infer` returns the (shape, dtype)
    of each output from the input tensors. An operator never allocates: it may *ask* for scratch
    tensors (`scratch`), which the graph creates and the C++ backend's memory plan places.
    """

    inputs: list
    outputs: list = field(default_factory=list, kw_only=True)
    origin: str = field(default="", kw_only=True)        # primitive and source line it came from
    scope: str = field(default="", kw_only=True)         # the user's layer path / named_scope ("Dense_0")
    scratch_names: dict = field(default_factory=dict, kw_only=True)

    aliases_input: ClassVar[bool] = False   # output is a view of inputs[0] (no copy)
    reads_batch_size: ClassVar[bool] = False   # computes with the batch size itself (ir/rows.py)

    @property
    def op_type(self) -> str:
        return type(self).__name__

    def infer(self, g) -> list:
        raise NotImplementedError

    def scratch(self, g) -> dict:
        """Extra buffers this operator needs while running: {key: (shape, dtype)}."""
        return {}

    # -- operators that own sub-graphs (loops, branches) override these ----------
    def subgraphs(self) -> list:
        """Child graphs whose operators this operator runs (a loop body, the branches of an If)."""
        return []

    def refresh(self) -> None:
        """Recompute `inputs` after a pass changed the sub-graphs (the tensors they read)."""

    def flops(self, g) -> int:
        return 0

    def rows(self, g) -> str:
        """Row independence, for splitting a run-time batch over threads (ir/rows.py): "" when
        output row i depends on input row i alone, else why not. Every operator class answers
        (tests/test_architecture.py); this default refuses."""
        return "is not known to keep the rows of the batch apart"

    def describe(self) -> str:
        """Attributes worth showing in a summary."""
        return ""
