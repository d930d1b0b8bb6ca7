"""The C++ backend's registry: one emission rule per IR operator class, as the ONNX backend has one
export rule per class (onnx/builder.py) and JAX one lowering per primitive and platform.

A rule is `rule(op, w, g)`: it writes the operator's C++ through the writer `w` (cpp/writer.py),
reading the graph `g` for tensor shapes. Register it with `@emits(OpClass)` in the family module
under cpp/ops/; `emit_op` looks the class up exactly (no inheritance: a new subclass needs its own
rule, and the contract test in tests/test_architecture.py says so).
"""
from __future__ import annotations

from ..ir.ops.base import rule_registry

RULES, emits = rule_registry("C++")


def emit_op(w, g, op) -> None:
    rule = RULES.get(type(op))
    if rule is None:
        raise NotImplementedError(f"no C++ rule for the {type(op).__name__} operator (register one with "
                                  "@emits in jaxpr2sofie/cpp/ops/)")
    rule(op, w, g)


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
        start = len(w.lines)
        emit_op(w, g, op)
        _label(w, start, op)


_LABEL_WIDTH = 110   # past this a comment's source goes on a line of its own


def _label(w, start: int, op) -> None:
    """Every operator's code opens with one comment saying what it computes and where the user
    wrote it: `// Dense_0: Gemm M=1 K=128 N=16 (dot_general @ model.py:9 (Net.__call__))`. The rule
    writes the first part as its opening comment; the layer and source line are added here, once."""
    if start == len(w.lines):
        return   # no code (a view)
    first = w.lines[start]
    indent = first[:len(first) - len(first.lstrip())]
    what = first.strip()[3:] if first.strip().startswith("// ") else op.op_type
    if op.scope:
        what = f"{op.scope}: {what}"
    origin = op.origin
    source = f" ({origin})" if origin else ""
    lines = [f"{indent}// {what}{source}"]
    if len(lines[0]) > _LABEL_WIDTH and source:
        lines = [f"{indent}// {what}", f"{indent}//   from {origin}"]
    if first.strip().startswith("// "):
        w.lines[start:start + 1] = lines
    else:
        w.lines[start:start] = lines
