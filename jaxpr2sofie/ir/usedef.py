"""The pass infrastructure: a use-def index over one graph, edits that keep it current, and a
driver that applies a rewrite rule until nothing changes.

`Graph.producer`/`consumers` scan every operator; a pass that asks them once per operator is
quadratic, which MobileNet-sized graphs (hundreds of operators, several passes) notice. `UseDef`
answers both from dictionaries, and its edits (`replace`, `absorb`) update the
dictionaries and the graph's operator list together, so a rule never works on a stale index.

A rule is `rule(g, ud, op) -> bool`: look at `op`, and if it matches, rewrite through `ud` and
return True. `fixed_point(g, rule)` offers it every operator, again and again, until a whole
sweep changes nothing.
"""
from __future__ import annotations


class UseDef:
    """Producer and consumers of every tensor of graph `g` (its own operators; a loop or branch
    owner lists the outer tensors its sub-graphs read among its inputs, so they count)."""

    def __init__(self, g):
        self.g = g
        self._producer: dict = {}
        self._consumers: dict = {}
        for op in g.ops:
            self._add(op)

    def _add(self, op) -> None:
        for o in op.outputs:
            self._producer[o] = op
        for i in op.inputs:
            self._consumers.setdefault(i, []).append(op)

    def _drop(self, op) -> None:
        for o in op.outputs:
            if self._producer.get(o) is op:
                del self._producer[o]
        for i in op.inputs:
            users = self._consumers.get(i, [])
            if op in users:
                users.remove(op)

    # -- questions ------------------------------------------------------------------------------
    def producer(self, name: str):
        return self._producer.get(name)

    def consumers(self, name: str) -> list:
        return list(dict.fromkeys(self._consumers.get(name, ())))

    def only_feeds(self, name: str, n: int = 1) -> bool:
        """`name` is read by exactly `n` operators and is not a graph output."""
        return len(self.consumers(name)) == n and name not in self.g.outputs

    def sole_reader(self, name: str):
        """The one operator reading `name`, or None (several readers, none, or a graph output)."""
        readers = self.consumers(name)
        return readers[0] if len(readers) == 1 and name not in self.g.outputs else None

    # -- edits ----------------------------------------------------------------------------------
    def replace(self, old: list, new) -> None:
        """Operators `old` become the one operator `new`, placed where the last of them was: every
        tensor `new` reads is made before that point, since each old operator's inputs were. `new`
        keeps the source line and scope of the first of them that has one (a Gemm, its MatMul's)."""
        for attr in ("origin", "scope"):
            if not getattr(new, attr):
                setattr(new, attr, next((getattr(op, attr) for op in old if getattr(op, attr)), ""))
        at = max(self.g.ops.index(op) for op in old)
        for op in old:
            self._drop(op)
        self.g.ops[at] = new
        for op in old:
            if op in self.g.ops:
                self.g.ops.remove(op)
        self._add(new)

    def set_input(self, op, k: int, name: str) -> None:
        """`op` reads tensor `name` as its input `k` (a Conv reading past a Pad it absorbed)."""
        self._drop(op)
        op.inputs[k] = name
        self._add(op)

    def remove(self, op) -> None:
        """`op` goes (its readers were rewired first)."""
        self._drop(op)
        self.g.ops.remove(op)

    def absorb(self, op, into, extra_inputs=()) -> None:
        """`into` takes over `op`'s outputs (and reads `extra_inputs` too) and `op` goes: a product
        absorbing the bias add or the activation after it. Readers of those tensors now read what
        `into` writes, under the same names, so nothing else needs rewiring."""
        self._drop(op)
        self._drop(into)
        self.g.ops.remove(op)
        into.inputs += list(extra_inputs)   # positional (a Gemm's bias), even if already read
        into.outputs = list(op.outputs)
        self._add(into)


def sole_reader(g, name):
    """The one operator of `g` reading tensor `name`, or None (several readers, none, or a graph
    output). A scan of the graph, for passes that do not keep a UseDef."""
    readers = g.consumers(name)
    return readers[0] if len(readers) == 1 and name not in g.outputs else None


def fixed_point(g, rule, limit: int = 10_000) -> int:
    """Apply `rule` to every operator of `g` until a whole sweep changes nothing; the number of
    rewrites made. After a rewrite the sweep restarts from the rewritten operator's neighbours
    (the list is re-read), so a rule may delete or replace operators freely."""
    ud = UseDef(g)
    done = 0
    changed = True
    while changed:
        changed = False
        for op in list(g.ops):
            if op in g.ops and rule(g, ud, op):
                done += 1
                changed = True
                if done > limit:
                    raise RuntimeError(f"pass rule {getattr(rule, '__name__', rule)} did not settle "
                                       f"after {limit} rewrites: it keeps undoing itself")
    return done
