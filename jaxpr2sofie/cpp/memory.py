"""The C++ backend's memory plan: which Session buffer each tensor lives in.

Every intermediate is a region of one arena the Session allocates; views share their input's
storage, a loop body may update a carry in place, and with `reuse_buffers` tensors whose lifetimes
do not overlap share a region. Functions of a graph; the IR itself knows nothing of buffers.
"""
from __future__ import annotations

from ..ir.graph import touched

ARENA_ALIGN = 64   # bytes: every buffer of the arena starts on a cache line


def plan(g) -> dict:
    """Decide each tensor's buffer: {tensor: base tensor whose storage it uses}.

    Views (Reshape and friends) share their input's storage. Graph outputs are written
    straight into the caller's memory, so they must be non-view intermediates (the
    `materialize_outputs` pass guarantees that).
    """
    base = g.view_bases()
    for op in g.walk():   # loop carries the body may update in place (no copy per step)
        for new, state in in_place_carries(g, op, base):
            for name, b in base.items():
                if b == new:
                    base[name] = base[state]
    return base


def buffer_plan(g) -> tuple:
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
    own = allocated(g)
    if not g.reuse_buffers:
        return [[t.name] for t in own], {t.name: k for k, t in enumerate(own)}
    base = plan(g)
    owned = {t.name for t in own}
    steps = [[n for n in names if base.get(n, n) in owned] for op in g.ops for names in events(op)]
    last = {}
    for i, names in enumerate(steps):
        for name in names:
            last[base.get(name, name)] = i
    slots, sizes, free, assign = [], [], [], {}
    for i, names in enumerate(steps):
        for name in names:
            if name not in owned or name in assign:
                continue
            need = g.nbytes(name, g.plan_batch)
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


def arena(g, batch: int | None = None) -> tuple:
    """The one allocation holding every intermediate: ([byte size per buffer], total bytes), each
    buffer at a 64-byte aligned offset; for `batch` given, as numbers for that batch."""
    slots, _ = buffer_plan(g)
    sizes = [[g.nbytes(n, batch) for n in names] for names in slots]
    total = sum(-(-max(s) // ARENA_ALIGN) * ARENA_ALIGN for s in sizes) if batch is not None else None
    return sizes, total


def allocated(g) -> list:
    """Intermediates that need storage of their own inside the Session."""
    base = plan(g)
    outs = set(g.outputs)
    return [t for n, t in g.tensors.items()
            if t.kind == "intermediate" and base[n] == n and n not in outs]


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
