"""The user's names and structure for a model's outputs: a function returning `{"logits": ..,
"prob": ..}` gives a header whose outputs are `tensor_logits` and `tensor_prob`, and a compiled
model that returns that dict, not a tuple in sorted-key order named after the last operations.
"""
from __future__ import annotations

import dataclasses

import jax

from .ir.ops.movement import Identity
from .ir.tensor import c_identifier


# sequence attributes that hold no tensor names (or are filled only by later passes)
_NOT_NAMES = frozenset({"inputs", "outputs", "epilogue", "packed", "branches", "steps"})


def _rename(g, old: str, new: str) -> None:
    """Rename a tensor everywhere the freshly lowered graph refers to it (before any pass: operator
    lists, sub-graph inputs and outputs, scratch buffers)."""
    t = g.tensors.pop(old)
    t.name = new
    g.tensors[new] = t

    def swap(names):
        return [new if n == old else n for n in names]

    def visit(graph):
        graph.inputs, graph.outputs = swap(graph.inputs), swap(graph.outputs)
        for op in graph.ops:
            op.inputs, op.outputs = swap(op.inputs), swap(op.outputs)
            op.scratch_names = {k: new if v == old else v for k, v in op.scratch_names.items()}
            # operators also name tensors in sequence attributes (Elementwise.args, DynamicSlice.starts:
            # names among Scalars and ints); single strings are kinds and modes, never tensors
            for f in dataclasses.fields(op):
                value = getattr(op, f.name)
                if f.name not in _NOT_NAMES and isinstance(value, (tuple, list)) and old in value:
                    setattr(op, f.name, type(value)(swap(value)))
            for sub in op.subgraphs():
                visit(sub)
    visit(g)


def name_outputs(g, labels) -> None:
    """Give the graph's outputs the names in `labels` (C identifiers made of them). A computed
    tensor is renamed in place; an input, a weight, a view or a repeated output gets a copy under
    that name (the Session writes outputs into the caller's memory, so it would be copied anyway)."""
    producer = {o: op for op in g.ops for o in op.outputs}
    wanted = [c_identifier(label) for label in labels]
    taken = set()
    for k, (old, want) in enumerate(zip(list(g.outputs), wanted)):
        op = producer.get(old)
        own = (op is not None and not op.aliases_input and old not in taken
               and g.tensors[old].kind == "intermediate" and g.outputs.count(old) == 1)
        if own and old == want:
            taken.add(old)
            continue
        clash = g.tensors.get(want)
        if clash is not None and clash.kind == "intermediate" and want not in g.outputs:
            moved = g.unique(want)
            _rename(g, want, moved)   # an intermediate already called `logits` steps aside
            if want in producer:
                producer[moved] = producer.pop(want)
        if own:   # `want` may still be taken (an input called `x` for an output `x`): the nearest free name
            new = want if want not in g.tensors else g.unique(want)
            _rename(g, old, new)
            producer[new] = producer.pop(old)
            g.outputs[k] = new
        else:
            (g.outputs[k],) = g.add_op(Identity([old]), hint=want)
        taken.add(g.outputs[k])


def keeps_structure(tree) -> bool:
    """Whether a compiled model returns the function's own output structure: yes for dicts and any
    nesting; a bare array or a flat tuple/list keeps the array-or-tuple return it always had."""
    if tree is None or tree.num_nodes == 1:
        return False
    kids = tree.children()
    flat_sequence = all(c.num_nodes == 1 for c in kids) and tree.node_data() is not None and \
        tree.node_data()[0] in (tuple, list)
    return not flat_sequence


class Structured:
    """A compiled model returning the function's output structure (a dict with its keys, nested
    pytrees); everything else (threads, close, inputs) is the compiled model's own."""

    def __init__(self, compiled, tree):
        self.compiled, self.tree = compiled, tree

    def __call__(self, *args):
        outs = jax.tree_util.tree_leaves(self.compiled(*args))
        return jax.tree_util.tree_unflatten(self.tree, outs)

    def __getattr__(self, name):
        return getattr(self.compiled, name)
