"""Fusion passes: a matrix product absorbs its bias and activation, softmax's chain becomes one
operator, elementwise chains become one loop; and the outputs are made distinct intermediates."""
from __future__ import annotations

from ..ir.ops.elementwise import Elementwise
from ..ir.ops.fused import FusedElementwise, steps_of, vector_chain
from ..ir.ops.linalg import MatMul
from ..ir.ops.movement import Identity, Reshape
from ..ir.ops.reduce import Reduce, Softmax
from ..ir.graph import graphs
from ..ir.usedef import fixed_point
from ..cpp.vmath import KINDS as VECTOR_KINDS


def _absorb_bias(g, ud, add) -> bool:
    """Rule: `matmul + bias` (bias broadcast over rows, or the full [M, N]) -> one Gemm."""
    if not (isinstance(add, Elementwise) and add.kind == "add" and len(add.inputs) == 2
            and all(isinstance(a, str) for a in add.args)):
        return False
    for k in (0, 1):
        mm_out, bias = add.args[k], add.args[1 - k]
        mm = ud.producer(mm_out)
        if not (isinstance(mm, MatMul) and len(mm.inputs) == 2 and mm.batch == 1 and ud.only_feeds(mm_out)):
            continue
        b = g.tensors[bias]
        out = g.tensors[add.outputs[0]]
        if b.kind != "weight" or out.shape != g.tensors[mm_out].shape:
            continue
        if (b.size == mm.n and b.shape[-1:] == out.shape[-1:]) or b.shape == out.shape:
            ud.absorb(add, into=mm, extra_inputs=[bias])
            return True
    return False


def fuse_gemm_bias(g) -> None:
    """MatMul followed by `+ bias` (bias broadcast over rows) becomes one Gemm, as SOFIE emits it."""
    fixed_point(g, _absorb_bias)


def _absorb_relu(g, ud, relu) -> bool:
    """Rule: a float32 relu whose operand only a matrix product makes moves into its epilogue."""
    if not (isinstance(relu, Elementwise) and relu.kind == "relu" and len(relu.inputs) == 1
            and relu.dtype == "float32"):
        return False
    mm = ud.producer(relu.inputs[0])
    if (isinstance(mm, MatMul) and not mm.act and ud.only_feeds(relu.inputs[0])
            and g.tensors[relu.outputs[0]].size == g.tensors[relu.inputs[0]].size):
        mm.act = "relu"
        ud.absorb(relu, into=mm)
        return True
    return False


def fuse_activation(g) -> None:
    """A relu right after a matrix product is applied in the product's epilogue, while the
    output tile is still in registers, instead of as a second pass over memory."""
    fixed_point(g, _absorb_relu)


def pack_weights(g) -> None:
    """A weight matrix that only dense products read is stored packed in panels of columns, the
    layout kernels.gemm_packed reads contiguously (the weight file holds it that way). Sub-graphs
    share the tensor table, so the readers are collected over the whole model: run on the root."""
    readers = {}
    for sub in graphs(g):
        for op in sub.ops:
            for k, name in enumerate(op.inputs):
                readers.setdefault(name, []).append((op, k))
    for name, uses in readers.items():
        t = g.tensors[name]
        if t.kind != "weight" or t.dtype != "float32" or t.packed or name in g.outputs or t.size == 0:
            continue
        layouts = set()
        for op, k in uses:
            ok = (type(op) is MatMul and k == 1 and op.batch == 1 and not op.trans_a
                  and (len(op.inputs) < 3 or g.tensors[op.inputs[2]].size == op.n))
            layouts.add((op.k, op.n, op.trans_b) if ok else None)
        if len(layouts) == 1 and None not in layouts:
            t.packed = layouts.pop()


def _only_feeds(g, name, n=1) -> bool:
    return len(g.consumers(name)) == n and name not in g.outputs


def _through_reshape(g, name):
    """The tensor behind a chain of Reshape views (broadcast_in_dim that only adds size-1 dims)."""
    op = g.producer(name)
    while isinstance(op, Reshape) and _only_feeds(g, name):
        name = op.inputs[0]
        op = g.producer(name)
    return name


def _elementwise(g, name, kind):
    op = g.producer(name)
    return op if isinstance(op, Elementwise) and op.kind == kind else None


def fuse_softmax(g) -> None:
    """The chain jax.nn.softmax lowers to (reduce_max, max with -inf, sub, exp, reduce_sum, div)
    becomes one Softmax operator."""
    for div in list(g.ops):
        if not (isinstance(div, Elementwise) and div.kind == "div" and len(div.inputs) == 2
                and all(isinstance(a, str) for a in div.args)):
            continue
        e, s_b = div.args
        exp = _elementwise(g, e, "exp")
        total = g.producer(_through_reshape(g, s_b))
        if not (exp and isinstance(total, Reduce) and total.kind == "sum" and len(total.axes) == 1
                and total.inputs == [e] and _only_feeds(g, e, 2) and _only_feeds(g, total.outputs[0])):
            continue
        sub = _elementwise(g, exp.inputs[0], "sub")
        if not (sub and _only_feeds(g, exp.inputs[0]) and len(sub.inputs) == 2 and sub.args == tuple(sub.inputs)):
            continue
        x, m_b = sub.args
        m = _through_reshape(g, m_b)
        clamp = _elementwise(g, m, "max")          # max(-inf, m): a no-op JAX adds for empty axes
        if clamp and len(clamp.inputs) == 1 and _only_feeds(g, m):
            m = clamp.inputs[0]
        rmax = g.producer(m)
        if not (isinstance(rmax, Reduce) and rmax.kind == "max" and rmax.axes == total.axes
                and rmax.inputs == [x]):
            continue
        soft = Softmax([x], axis=total.axes[0], outputs=list(div.outputs), origin="softmax")
        g.ops[g.ops.index(div)] = soft


def _fusible(op) -> bool:
    return isinstance(op, (Elementwise, FusedElementwise)) and bool(op.outputs)


def _fuse_into(g, ud, op) -> bool:
    """Rule: `op` absorbs the elementwise operator making one of its operands, when that operand
    has `op`'s output shape and nothing else reads it. float32 exp/tanh/logistic join a chain
    only if the whole chain runs as vectors (ops/fused.vector_chain): alone they run through
    vmath's vector functions, and inside a scalar loop they would be libm calls."""
    if not _fusible(op):
        return False
    shape = g.tensors[op.outputs[0]].shape
    for a in op.inputs:
        prev = ud.producer(a)
        if not (prev is not None and _fusible(prev) and ud.only_feeds(a)
                and g.tensors[a].shape == shape and g.tensors[a].kind == "intermediate"):
            continue
        steps = steps_of(prev) + steps_of(op)
        if any(s.dtype == "float32" and s.kind in VECTOR_KINDS for s in steps) and not vector_chain(g, steps, shape):
            continue
        ud.replace([prev, op], FusedElementwise.chain(g, prev, op))
        return True
    return False


def fuse_elementwise(g) -> None:
    """Chains of elementwise operators (GELU's polynomial, a LayerNorm's scale and shift, an LSTM
    cell's state update) run as one loop each, the intermediate values in registers."""
    fixed_point(g, _fuse_into)


def materialize_outputs(g) -> None:
    """Every graph output must be a distinct, non-view intermediate: the Session writes outputs
    straight into the caller's memory. Inputs, weights, views and repeats get an Identity copy."""
    base = g.plan()
    seen = set()
    produced = {o for op in g.ops for o in op.outputs}
    for k, name in enumerate(g.outputs):
        t = g.tensors[name]
        if t.kind != "intermediate" or name not in produced or base[name] != name or name in seen:
            (g.outputs[k],) = g.add_op(Identity([name]), hint="output")
        seen.add(g.outputs[k])
    # A view of an output would read memory the caller owns only after `run` returns; fine, but a
    # view *into which an output aliases* cannot happen: outputs are never views (checked above).


def reuse_buffers(g) -> None:
    """Let intermediates whose lifetimes do not overlap share storage (see Graph.buffer_plan)."""
    g.reuse_buffers = True
