"""Row independence: whether a dynamic-batch graph may run its batch in slices, one per thread.

A Session with n_threads > 1 splits the rows of `run(batch, ...)` into contiguous chunks and runs
the same generated body on each chunk with its own buffers. That is only correct when output row
i depends on input row i alone. We decide it structurally and conservatively, operator by
operator: anything not known to keep rows apart (a reduction, sort, gather or slice over the batch
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
    if all(unbatched(s) for s in shapes.values()) and not op.subgraphs():
        # computes on weights and constants only: the same in every chunk, unless it reads the batch
        return "reads the batch size as a value" if type(op).__name__ == "DimValue" else ""
    rule = _RULES.get(type(op).__name__)
    if rule is None:
        return "is not known to keep the rows of the batch apart"
    return rule(g, op)


def _lead(g, n):
    return g.tensors[n].shape[0]


def _same_rows(g, op, names) -> str:
    """Every blocked tensor among `names` has the outputs' leading dimension and rank."""
    out = g.tensors[op.outputs[0]].shape
    if not blocked(out):
        return "mixes rows into an output without the batch as its leading axis"
    for n in names:
        s = g.tensors[n].shape
        if not unbatched(s) and (s[0] != out[0] or len(s) != len(out)):
            return f"combines '{n}' of shape {_show(s)} with an output of shape {_show(out)}"
    return ""


def _axis_not_batch(axis, rank) -> bool:
    return axis % rank != 0


def _elementwise(g, op):
    return _same_rows(g, op, op.inputs)


def _view(g, op):   # Reshape, Identity: same elements, both sides blocked
    ok = blocked(g.tensors[op.inputs[0]].shape) and blocked(g.tensors[op.outputs[0]].shape)
    return "" if ok else "moves the batch away from the leading axis"


def _transpose(g, op):
    return "" if op.perm[0] == 0 else "moves the batch axis"


def _slice(g, op):
    s = g.tensors[op.inputs[0]].shape
    whole = op.starts[0] == 0 and op.limits[0] == s[0] and op.steps[0] == 1
    return "" if whole else "slices the batch axis"


def _expand(g, op):
    src = g.tensors[op.inputs[0]].shape
    if unbatched(src):
        return _same_rows(g, op, [])
    return "" if op.bdims[0] == 0 and src[0] == op.shape[0] else "broadcasts along the batch axis"


def _pad(g, op):
    return "" if tuple(op.config[0]) == (0, 0, 0) else "pads the batch axis"


def _concat(g, op):
    return _same_rows(g, op, op.inputs) if op.axis != 0 else "concatenates along the batch axis"


def _reduce(g, op):
    return "" if 0 not in op.axes else "reduces over the batch axis"


def _along_axis(g, op):   # ArgReduce, Cumulative, Softmax, Sort, TopK
    rank = len(g.tensors[op.inputs[0]].shape)
    return "" if _axis_not_batch(op.axis, rank) else "works along the batch axis"


def _iota(g, op):
    return "" if op.dimension != 0 else "counts along the batch axis"


def _matmul(g, op):
    a, b = (g.tensors[n].shape for n in op.inputs[:2])
    rest = op.inputs[2:]
    if isinstance(op.batch, Sym):   # one product per row (vmapped): A, B and output all per row
        if any(isinstance(d, Sym) for d in (op.m, op.k, op.n)):
            return "has the batch in a matrix dimension of a per-row product"
        return _same_rows(g, op, op.inputs[:2]) or ("" if all(unbatched(g.tensors[n].shape) for n in rest)
                                                    else "adds a per-row bias to a per-row product")
    # rows of A are rows of the output: the batch must be M, never K, and B shared by all rows
    if op.batch != 1 or op.trans_a or not isinstance(op.m, Sym) or isinstance(op.k, Sym) \
            or not blocked(a) or not unbatched(b):
        return "contracts or mixes the batch axis"
    return _same_rows(g, op, [op.inputs[0], *rest])


def _conv(g, op):
    if not unbatched(g.tensors[op.inputs[1]].shape):
        return "has a kernel that depends on the batch"
    return _same_rows(g, op, [op.inputs[0], *op.inputs[2:]])


def _pool(g, op):
    batch_axis = (op.window[0], op.strides[0], tuple(op.padding[0]), op.base_dilation[0], op.window_dilation[0])
    return "" if batch_axis == (1, 1, (0, 0), 1, 1) else "has a window over the batch axis"


def _loop(g, op):
    if op.length is not None and isinstance(op.length, Sym):
        return "runs a number of steps that depends on the batch"
    for x in op.inputs[op.n_carry:op.n_args]:
        if not unbatched(g.tensors[x].shape):
            return "scans over the batch axis"
    # carries and outer tensors are blocked or unbatched (checked above); the body's and the
    # condition's operators are checked one by one by split_refusal (Graph.walk), so a predicate
    # that looks at several rows (a vmapped while) is refused there
    return ""


def _branch(g, op):
    return "" if unbatched(g.tensors[op.inputs[0]].shape) else "picks a branch per row"


_RULES = {
    "Elementwise": _elementwise, "FusedElementwise": _elementwise, "Reshape": _view, "Identity": _view, "Transpose": _transpose,
    "Slice": _slice, "Expand": _expand, "Pad": _pad, "Concat": _concat, "Reduce": _reduce,
    "ArgReduce": _along_axis, "Cumulative": _along_axis, "Softmax": _along_axis, "Sort": _along_axis,
    "TopK": _along_axis, "Iota": _iota, "MatMul": _matmul, "Conv": _conv, "Pool": _pool,
    "Loop": _loop, "Branch": _branch,
}
