"""Operators that own sub-graphs: Loop (scan, while, fori_loop) and If/Switch (cond, switch).

The sub-graphs' code is emitted once, inside one C++ loop or branch, so code size does not grow
with a trip count. Their tensors live in the parent's table and get Session buffers like any
other; the memory plan keeps every tensor a body reads alive for the whole loop.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..tensor import ctype
from .base import Op, emit_ops


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


def _free(op, graphs) -> list:
    """Outer tensors the sub-graphs read, after the operator's own arguments."""
    mine = set(op.inputs[:op.n_args])
    out = []
    for sub in graphs:
        out += [n for n in sub.free_tensors() if n not in mine and n not in out]
    return out


@dataclass(eq=False)
class Loop(Op):
    """scan (`length` set) or while (`cond` set).

    inputs: [carry inits..., sequences xs..., outer tensors the sub-graphs read...].
    body.inputs: [carry state..., per-step slices of xs...]; body.outputs: [new carries..., ys...].
    cond.inputs: the carry state; cond.outputs[0]: the predicate, evaluated before every step.
    outputs: [final carries..., ys stacked along a new leading axis (scan only)].
    Carries are copied into their state before the loop and back after every step (ys first:
    a y may be an old carry).
    """
    body: object = None
    cond: object = None
    n_carry: int = 0
    n_xs: int = 0
    length: int | None = None
    reverse: bool = False

    @property
    def n_args(self) -> int:
        return self.n_carry + self.n_xs

    @property
    def op_type(self) -> str:
        return "Loop"

    def subgraphs(self):
        return [s for s in (self.cond, self.body) if s is not None]

    def refresh(self):
        self.inputs = self.inputs[:self.n_args] + _free(self, self.subgraphs())

    def infer(self, g):
        state = self.body.inputs[:self.n_carry]
        specs = [(g.tensors[s].shape, g.tensors[s].dtype) for s in state]
        for y in self.body.outputs[self.n_carry:]:
            t = g.tensors[y]
            specs.append(((self.length,) + tuple(t.shape), t.dtype))
        return specs

    def emit(self, w, g):
        nc = self.n_carry
        state, slices = self.body.inputs[:nc], self.body.inputs[nc:]
        w.comment(f"Loop {self.describe()} ({self.origin})" if self.origin else f"Loop {self.describe()}")
        if self.length == 0:   # no step: the carries pass through, the (empty) ys need nothing
            for init, out in zip(self.inputs[:nc], self.outputs[:nc]):
                copy_tensor(w, g, init, out)
            return
        for init, s in zip(self.inputs[:nc], state):
            copy_tensor(w, g, init, s)
        if self.length is None:
            with w.block("while (true)"):
                emit_graph(w, g, self.cond)
                w.line(f"if (!{w.ref(self.cond.outputs[0])}[0])")
                w.line("   break;")
                emit_graph(w, g, self.body)
                self._next_carries(w, g, state)
        else:
            t = w.fresh("step")
            with w.block(f"for (size_t {t} = 0; {t} < {self.length}; ++{t})"):
                i = t
                if self.reverse:
                    i = w.fresh("at")
                    w.line(f"const size_t {i} = {self.length - 1} - {t};")
                for x, sl in zip(self.inputs[nc:self.n_args], slices):
                    n = g.tensors[sl].size
                    w.line(f"const {ctype(g.tensors[sl].dtype)}* {w.ref(sl)} = {w.ref(x)} + {i} * {n};")
                emit_graph(w, g, self.body)
                for y, ys in zip(self.body.outputs[nc:], self.outputs[nc:]):
                    n = g.tensors[y].size
                    w.line(f"std::copy_n({w.ref(y)}, {n}, {w.ref(ys)} + {i} * {n});")
                self._next_carries(w, g, state)
        for s, out in zip(state, self.outputs[:nc]):
            copy_tensor(w, g, s, out)

    def _next_carries(self, w, g, state):
        for new, s in zip(self.body.outputs[:self.n_carry], state):
            copy_tensor(w, g, new, s)

    def flops(self, g):
        per = sum(op.flops(g) for sub in self.subgraphs() for op in sub.ops)
        return per * (self.length or 1)

    def describe(self):
        kind = f"scan length={self.length}" + (" reverse" if self.reverse else "") if self.length is not None \
            else "while"
        return f"{kind} carries={self.n_carry} body={len(self.body.ops)} ops"


@dataclass(eq=False)
class Branch(Op):
    """cond/switch: inputs [index, outer tensors the branches read...]; runs branches[index],
    the index clamped into range as lax.switch does (a bool picks 0 or 1), and copies that
    branch's outputs into the operator's outputs."""
    branches: tuple = ()

    n_args = 1

    @property
    def op_type(self) -> str:
        return "If" if len(self.branches) == 2 else "Switch"

    def subgraphs(self):
        return list(self.branches)

    def refresh(self):
        self.inputs = self.inputs[:1] + _free(self, self.branches)

    def infer(self, g):
        return [(g.tensors[o].shape, g.tensors[o].dtype) for o in self.branches[0].outputs]

    def emit(self, w, g):
        idx = g.tensors[self.inputs[0]]
        k = w.fresh("branch")
        last = len(self.branches) - 1
        w.comment(f"{self.op_type} over {len(self.branches)} branches ({self.origin})")
        if idx.dtype == "bool":
            w.line(f"const int64_t {k} = {w.ref(idx.name)}[0] ? 1 : 0;")
        else:
            w.line(f"int64_t {k} = static_cast<int64_t>({w.ref(idx.name)}[0]);")
            w.line(f"{k} = {k} < 0 ? 0 : ({k} > {last} ? {last} : {k});")
        for b, sub in enumerate(self.branches):
            head = f"if ({k} == {b})" if b == 0 else ("else" if b == last else f"else if ({k} == {b})")
            with w.block(head):
                emit_graph(w, g, sub)
                for src, dst in zip(sub.outputs, self.outputs):
                    copy_tensor(w, g, src, dst)

    def flops(self, g):
        return max(sum(op.flops(g) for op in sub.ops) for sub in self.branches)

    def describe(self):
        return " | ".join(f"{len(s.ops)} ops" for s in self.branches)
