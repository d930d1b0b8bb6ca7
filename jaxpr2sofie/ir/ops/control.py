"""Operators that own sub-graphs: Loop (scan, while, fori_loop) and If/Switch (cond, switch).

The sub-graphs' code is emitted once, inside one C++ loop or branch, so code size does not grow
with a trip count. Their tensors live in the parent's table and get Session buffers like any
other; the memory plan keeps every tensor a body reads alive for the whole loop.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Op
from ..dims import Sym
from ..rows import unbatched


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

    def flops(self, g):
        per = sum(op.flops(g) for sub in self.subgraphs() for op in sub.ops)
        return per * (self.length or 1)

    def describe(self):
        kind = f"scan length={self.length}" + (" reverse" if self.reverse else "") if self.length is not None \
            else "while"
        return f"{kind} carries={self.n_carry} body={len(self.body.ops)} ops"

    def rows(self, g) -> str:
        if self.length is not None and isinstance(self.length, Sym):
            return "runs a number of steps that depends on the batch"
        for x in self.inputs[self.n_carry:self.n_args]:
            if not unbatched(g.tensors[x].shape):
                return "scans over the batch axis"
        # carries and outer tensors are blocked or unbatched (checked by split_refusal); the body's and
        # the condition's operators are checked one by one (Graph.walk), so a predicate that looks at
        # several rows (a vmapped while) is refused there
        return ""


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

    def flops(self, g):
        return max(sum(op.flops(g) for op in sub.ops) for sub in self.branches)

    def describe(self):
        return " | ".join(f"{len(s.ops)} ops" for s in self.branches)

    def rows(self, g) -> str:
        return "" if unbatched(g.tensors[self.inputs[0]].shape) else "picks a branch per row"
