"""Loops and branches in C++: each sub-graph's code is emitted once, inside one C++ loop or branch."""
from __future__ import annotations

from ...ir.ops.control import Branch, Loop
from ...ir.tensor import ctype
from ..rules import emit_ops, emits


def copy_tensor(w, g, src: str, dst: str) -> None:
    """dst = src (same size), skipped when both already name the same storage."""
    s, d = w.ref(src), w.ref(dst)
    if s == d:
        return
    n = g.tensors[dst].size
    if n == 1:
        w.line(f"{d}[0] = {s}[0];")
    elif n != 0:
        w.line(f"std::copy_n({s}, {n}, {d});")


def emit_graph(w, g, sub) -> None:
    emit_ops(w, g, sub.ops)


@emits(Loop)
def _loop(op, w, g):
    nc = op.n_carry
    state, slices = op.body.inputs[:nc], op.body.inputs[nc:]
    w.comment(f"Loop {op.describe()}")
    if op.length == 0:   # no step: the carries pass through, the (empty) ys need nothing
        for init, out in zip(op.inputs[:nc], op.outputs[:nc]):
            copy_tensor(w, g, init, out)
        return
    for init, s in zip(op.inputs[:nc], state):
        copy_tensor(w, g, init, s)
    if op.length is None:
        with w.block("while (true)"):
            emit_graph(w, g, op.cond)
            w.line(f"if (!{w.ref(op.cond.outputs[0])}[0])")
            w.line("   break;")
            emit_graph(w, g, op.body)
            _next_carries(op, w, g, state)
    else:
        t = w.fresh("step")
        with w.block(f"for (size_t {t} = 0; {t} < {op.length}; ++{t})"):
            i = t
            if op.reverse:
                i = w.fresh("at")
                w.line(f"const size_t {i} = {op.length - 1} - {t};")
            for x, sl in zip(op.inputs[nc:op.n_args], slices):
                n = g.tensors[sl].size
                w.line(f"const {ctype(g.tensors[sl].dtype)}* {w.ref(sl)} = {w.ref(x)} + {i} * {n};")
            emit_graph(w, g, op.body)
            for y, ys in zip(op.body.outputs[nc:], op.outputs[nc:]):
                n = g.tensors[y].size
                w.line(f"std::copy_n({w.ref(y)}, {n}, {w.ref(ys)} + {i} * {n});")
            _next_carries(op, w, g, state)
    for s, out in zip(state, op.outputs[:nc]):
        copy_tensor(w, g, s, out)


def _next_carries(op, w, g, state):
    for new, s in zip(op.body.outputs[:op.n_carry], state):
        copy_tensor(w, g, new, s)


@emits(Branch)
def _branch(op, w, g):
    idx = g.tensors[op.inputs[0]]
    k = w.fresh("branch")
    last = len(op.branches) - 1
    w.comment(f"{op.op_type} over {len(op.branches)} branches")
    if idx.dtype == "bool":
        w.line(f"const int64_t {k} = {w.ref(idx.name)}[0] ? 1 : 0;")
    else:
        w.line(f"int64_t {k} = static_cast<int64_t>({w.ref(idx.name)}[0]);")
        w.line(f"{k} = {k} < 0 ? 0 : ({k} > {last} ? {last} : {k});")
    for b, sub in enumerate(op.branches):
        head = f"if ({k} == {b})" if b == 0 else ("else" if b == last else f"else if ({k} == {b})")
        with w.block(head):
            emit_graph(w, g, sub)
            for src, dst in zip(sub.outputs, op.outputs):
                copy_tensor(w, g, src, dst)
