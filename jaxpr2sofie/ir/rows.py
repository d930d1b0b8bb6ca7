"""Row independence: whether a dynamic-batch graph may run its batch in slices, one per thread.

A Session with n_threads > 1 splits the rows of `run(batch, ...)` into contiguous chunks and runs
the same generated body on each chunk with its own buffers. That is only correct when output row
i depends on input row i alone. We decide it structurally and conservatively, operator by
operator, each operator class answering for itself (`Op.rows`): anything not known to keep rows apart (a reduction, sort, gather or slice over the batch
axis, the batch size read as a value, a scan over rows, a matrix product contracting the batch
axis...) makes the whole graph not splittable, and the Session then runs on the calling thread.

Every tensor an operator touches must be either *unbatched* (no batch in its shape: weights,
constants, values computed from them; identical in every chunk) or *blocked*: shape
(a*N, d1, ..., dk) with ints a, d1..dk, so that row i of the batch is the contiguous element range
[i*S, (i+1)*S). A blocked tensor computed for a chunk of rows is exactly that chunk's slice of
the whole-batch tensor, provided each operator maps blocks to blocks, which the rules below check.
"""
from __future__ import annotations

from .dims import Sym


def blocked(shape) -> bool:
    """(a*N, ints...): the batch only in the leading dimension, as a plain multiple of N."""
    return (len(shape) > 0 and isinstance(shape[0], Sym) and len(shape[0].terms) == 1
            and shape[0].terms[0][0] == 1 and shape[0].terms[0][1] > 0
            and not any(isinstance(d, Sym) for d in shape[1:]))


def unbatched(shape) -> bool:
    return not any(isinstance(d, Sym) for d in shape)


def row_elements(shape) -> int:
    """Elements of one row (one unit of the batch) of a blocked tensor."""
    n = shape[0].terms[0][1]
    for d in shape[1:]:
        n *= d
    return n


def split_refusal(g) -> str:
    """Why the rows of `g` cannot be split over threads, or "" when they can."""
    if not g.dynamic:
        return "the batch is fixed at conversion time (convert with batch=\"dynamic\" to use threads)"
    for n in g.inputs + g.outputs:
        shape = g.tensors[n].shape
        if not (blocked(shape) or (n in g.inputs and unbatched(shape))):
            return f"'{g.tensors[n].label or n}' of shape {_show(shape)} does not hold the batch as its leading axis"
    for op in g.walk():
        why = _op_refusal(g, op)
        if why:
            return f"{op.op_type} ({op.origin or 'no source line'}) {why}"
    return ""


def _show(shape) -> str:
    return "(" + ", ".join(repr(d) for d in shape) + ")"


def _op_refusal(g, op) -> str:
    shapes = {n: g.tensors[n].shape for n in [*op.inputs, *op.outputs] if n}
    for n, s in shapes.items():
        if not (blocked(s) or unbatched(s)):
            return f"touches '{n}' of shape {_show(s)}, whose batch is not the leading axis"
    if all(unbatched(s) for s in shapes.values()) and not op.subgraphs() and not op.reads_batch_size:
        return ""   # computes on weights and constants only: the same in every chunk
    return op.rows(g)


NOT_KNOWN = "is not known to keep the rows of the batch apart"


def same_rows(g, op, names) -> str:
    """Every blocked tensor among `names` has the outputs' leading dimension and rank."""
    out = g.tensors[op.outputs[0]].shape
    if not blocked(out):
        return "mixes rows into an output without the batch as its leading axis"
    for n in names:
        s = g.tensors[n].shape
        if not unbatched(s) and (s[0] != out[0] or len(s) != len(out)):
            return f"combines '{n}' of shape {_show(s)} with an output of shape {_show(out)}"
    return ""


def view_rows(g, op) -> str:
    """Reshape, Identity: the same elements, both sides blocked."""
    ok = blocked(g.tensors[op.inputs[0]].shape) and blocked(g.tensors[op.outputs[0]].shape)
    return "" if ok else "moves the batch away from the leading axis"


def along_axis_rows(g, op) -> str:
    """An operator working along `op.axis` (ArgReduce, Cumulative, Softmax, Sort, TopK)."""
    rank = len(g.tensors[op.inputs[0]].shape)
    return "" if op.axis % rank != 0 else "works along the batch axis"
