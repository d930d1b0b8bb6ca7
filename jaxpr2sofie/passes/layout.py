"""Layout passes: a channels-first (NCHW) model pays for its layout once, not per layer.

The conv rule computes in channels-last and wraps each convolution of an NCHW model in a
Transpose pair. `sink_transposes` moves every Transpose towards the outputs, past the operators
that do not care about layout (elementwise ones, pooling), until it meets the Transpose back
into channels-last in front of the next convolution and both vanish. The bias add and relu then
sit right after their convolution, where `fuse_conv_epilogue` can fold them in.
"""
from __future__ import annotations

import numpy as np

from ..ir.ops.base import Scalar
from ..ir.ops.elementwise import Elementwise
from ..ir.ops.linalg import MatMul
from ..ir.usedef import sole_reader
from ..ir.ops.movement import Reshape, Transpose
from ..ir.ops.pool import Pool

# Each step removes a Transpose or moves one past an operator, so the graph size bounds the
# work; the cap only guards against a bug turning that into an endless loop.
MAX_SWEEPS = 10_000


def sink_transposes(g) -> None:
    """Sink Transposes past layout-agnostic operators and cancel the pairs that meet, to a fixed
    point. Only a Transpose whose result has exactly one reader in this graph moves (a result
    that is also a graph output, read by a sub-graph or read twice stays where it is)."""
    weights = {}   # (weight, rank, perm) -> the permuted copy, so shared weights are stored once
    for _ in range(MAX_SWEEPS):
        changed = False
        for t in [op for op in g.ops if isinstance(op, Transpose)]:
            if any(op is t for op in g.ops) and _step(g, t, weights):
                changed = True
        if not changed:
            return


def _step(g, t, weights) -> bool:
    if _is_identity(t.perm):
        _forward(g, t.inputs[0], t.outputs[0], t)
        return True
    reader = sole_reader(g, t.outputs[0])
    if isinstance(reader, Transpose):
        return _compose(g, t, reader)
    if isinstance(reader, Elementwise):
        return _sink_elementwise(g, t, reader, weights)
    if isinstance(reader, Pool):
        return _sink_pool(g, t, reader)
    if isinstance(reader, Reshape):
        return _fold_into_dense(g, t, reader)
    return False


def _is_identity(perm) -> bool:
    return tuple(perm) == tuple(range(len(perm)))


def _inverse(perm) -> tuple:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


# -- cancelling ---------------------------------------------------------------------------------

def _compose(g, first, second) -> bool:
    """Transpose(Transpose(x, p), q) is Transpose(x, p∘q): one copy instead of two, none if the
    two undo each other."""
    perm = tuple(first.perm[k] for k in second.perm)
    x = first.inputs[0]
    g.ops.remove(first)
    second.inputs, second.perm = [x], perm
    if _is_identity(perm):
        _forward(g, x, second.outputs[0], second)
    return True


def _forward(g, x, z, op) -> None:
    """Replace `op` (which computes z as a copy of x) by nothing: the producer of x writes z
    directly when nobody else reads x; otherwise z becomes a free view of x."""
    producer = g.producer(x)
    if (producer is not None and not producer.subgraphs() and g.consumers(x) == [op] and x not in g.outputs
            and g.tensors[x].kind == "intermediate" and g.tensors[x].shape == g.tensors[z].shape):
        producer.outputs = [z if o == x else o for o in producer.outputs]
        g.ops.remove(op)
    else:
        g.ops[g.ops.index(op)] = Reshape([x], shape=tuple(g.tensors[z].shape), outputs=[z], origin=op.origin,
                                          scope=op.scope)


# -- sinking ------------------------------------------------------------------------------------

def _move_below(g, t, op) -> None:
    """`op` already reads t's input in place of t's output: it now computes in t's source layout,
    and t transposes op's result into the layout op's readers expect."""
    z = op.outputs[0]
    zt = g.tensors[z]
    inv = _inverse(t.perm)
    src = g.add_tensor(f"{z}_src_layout", tuple(zt.shape[k] for k in inv), zt.dtype, "intermediate")
    op.outputs = [src]
    t.inputs, t.outputs = [src], [z]
    g.ops.remove(t)
    g.ops.insert(g.ops.index(op) + 1, t)


def _sink_elementwise(g, t, op, weights) -> bool:
    """An elementwise operator reads its operands in any layout, as long as they all share it:
    the transposed tensor is read before the Transpose, weights are permuted now (their data, at
    conversion time), and operands that are a single value broadcast the same in every layout."""
    x, y = t.inputs[0], t.outputs[0]
    shape = tuple(g.tensors[y].shape)
    if len(op.outputs) != 1 or tuple(g.tensors[op.outputs[0]].shape) != shape:
        return False   # the output is broadcast beyond the transposed tensor: not a layout-free map
    args = []
    for a in op.args:
        if isinstance(a, Scalar):
            args.append(a)
        elif a == y:
            args.append(x)
        elif all(d == 1 for d in g.tensors[a].shape):
            args.append(a)
        else:   # x itself read beside y (y + x.T) is in the other layout: it is no weight, so this fails
            moved = _permuted_weight(g, a, len(shape), _inverse(t.perm), weights)
            if moved is None:
                return False
            args.append(moved)
    op.args = tuple(args)
    op.inputs = [a for a in args if isinstance(a, str)]
    if op.shape is not None:
        op.shape = tuple(g.tensors[x].shape)
    _move_below(g, t, op)
    return True


def _permuted_weight(g, name, rank, perm, weights):
    """Weight `name`, broadcast against a rank-`rank` tensor, in the layout `perm` gives it; None
    for a tensor whose values are only known at run time."""
    t = g.tensors[name]
    if t.kind != "weight" or t.data is None or len(t.shape) > rank:
        return None
    key = (name, rank, perm)
    if key not in weights:
        full = np.asarray(t.data).reshape((1,) * (rank - len(t.shape)) + tuple(t.shape))
        arr = np.ascontiguousarray(np.transpose(full, perm))
        weights[key] = g.add_weight(f"{t.label or name}_{''.join(map(str, perm))}", arr)
    return weights[key]


def _sink_pool(g, t, pool) -> bool:
    """A window reduction has no layout of its own: permute its window instead of its input."""
    if pool.inputs != [t.outputs[0]] or len(pool.outputs) != 1:
        return False
    inv = _inverse(t.perm)   # source axis j is axis inv[j] of the transposed tensor

    def moved(values):
        return tuple(values[k] for k in inv)
    pool.window, pool.strides, pool.padding = moved(pool.window), moved(pool.strides), moved(pool.padding)
    pool.base_dilation, pool.window_dilation = moved(pool.base_dilation), moved(pool.window_dilation)
    pool.inputs = [t.inputs[0]]
    _move_below(g, t, pool)
    return True


# -- flatten + dense ----------------------------------------------------------------------------

def _fold_into_dense(g, t, flat) -> bool:
    """Transpose -> flatten to [N, K] -> x @ W: the flatten only fixes the order of W's K rows,
    so flatten the source layout instead and reorder W's rows at conversion time."""
    x, y = t.inputs[0], t.outputs[0]
    ys, r = tuple(g.tensors[y].shape), flat.outputs[0]
    dense = sole_reader(g, r)
    if not (t.perm[0] == 0 and len(flat.shape) == 2 and flat.shape[0] == ys[0] and type(dense) is MatMul
            and dense.inputs[0] == r and len(dense.inputs) == 2 and dense.inputs[1] != r
            and dense.batch == 1 and not dense.trans_a and not dense.trans_b):
        return False
    w = g.tensors[dense.inputs[1]]
    if w.kind != "weight" or w.data is None or tuple(w.shape) != (dense.k, dense.n):
        return False
    inv = _inverse(t.perm)   # source axis j is axis inv[j] of the transposed tensor
    rows = np.asarray(w.data).reshape(ys[1:] + (dense.n,))
    rows = np.transpose(rows, [inv[j] - 1 for j in range(1, len(ys))] + [len(ys) - 1])
    dense.inputs[1] = g.add_weight(f"{w.label or w.name}_rows", np.ascontiguousarray(rows).reshape(w.shape))
    flat.inputs = [x]
    g.ops.remove(t)
    return True
