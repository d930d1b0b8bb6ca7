"""Fusion passes: a matrix product absorbs its bias and activation, softmax's chain becomes one
operator, elementwise chains become one loop; and the outputs are made distinct intermediates."""
from __future__ import annotations

from ..ir.ops.elementwise import VECTOR_KINDS, Elementwise
from ..ir.ops.fused import FusedElementwise, steps_of, vector_chain
from ..ir.ops.linalg import MatMul
from ..ir.ops.movement import Identity, Reshape
from ..ir.ops.reduce import Reduce, Softmax
from ..ir.usedef import fixed_point


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


def _through_reshape(ud, name):
    """The tensor behind a chain of Reshape views (broadcast_in_dim that only adds size-1 dims)."""
    op = ud.producer(name)
    while isinstance(op, Reshape) and ud.only_feeds(name):
        name = op.inputs[0]
        op = ud.producer(name)
    return name


def _elementwise(ud, name, kind):
    op = ud.producer(name)
    return op if isinstance(op, Elementwise) and op.kind == kind else None


def _softmax(g, ud, div) -> bool:
    """Rule: the `div` ending jax.nn.softmax's chain becomes one Softmax (the chain it no longer
    reads is pruned with the other dead operators)."""
    if not (isinstance(div, Elementwise) and div.kind == "div" and len(div.inputs) == 2
            and all(isinstance(a, str) for a in div.args)):
        return False
    e, s_b = div.args
    exp = _elementwise(ud, e, "exp")
    total = ud.producer(_through_reshape(ud, s_b))
    if not (exp and isinstance(total, Reduce) and total.kind == "sum" and len(total.axes) == 1
            and total.inputs == [e] and ud.only_feeds(e, 2) and ud.only_feeds(total.outputs[0])):
        return False
    sub = _elementwise(ud, exp.inputs[0], "sub")
    if not (sub and ud.only_feeds(exp.inputs[0]) and len(sub.inputs) == 2 and sub.args == tuple(sub.inputs)):
        return False
    x, m_b = sub.args
    m = _through_reshape(ud, m_b)
    clamp = _elementwise(ud, m, "max")          # max(-inf, m): a no-op JAX adds for empty axes
    if clamp and len(clamp.inputs) == 1 and ud.only_feeds(m):
        m = clamp.inputs[0]
    rmax = ud.producer(m)
    if not (isinstance(rmax, Reduce) and rmax.kind == "max" and rmax.axes == total.axes
            and rmax.inputs == [x]):
        return False
    ud.replace([div], Softmax([x], axis=total.axes[0], outputs=list(div.outputs)))
    return True


def fuse_softmax(g) -> None:
    """The chain jax.nn.softmax lowers to (reduce_max, max with -inf, sub, exp, reduce_sum, div)
    becomes one Softmax operator."""
    fixed_point(g, _softmax)


def _fusible(op) -> bool:
    return isinstance(op, (Elementwise, FusedElementwise)) and bool(op.outputs)


def _fuse_into(g, ud, op) -> bool:
    """Rule: `op` absorbs the elementwise operator making one of its operands, when that operand
    has `op`'s output shape and nothing else reads it. float32 exp/tanh/logistic join a chain
    only if the whole chain runs as vectors (ir/ops/fused.vector_chain): alone they run as a vector
    function, and inside a scalar loop they would be libm calls (ir/ops/elementwise.VECTOR_KINDS)."""
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
    base = g.view_bases()
    seen = set()
    produced = {o for op in g.ops for o in op.outputs}
    for k, name in enumerate(g.outputs):
        t = g.tensors[name]
        if t.kind != "intermediate" or name not in produced or base[name] != name or name in seen:
            (g.outputs[k],) = g.add_op(Identity([name]), hint="output")
        seen.add(g.outputs[k])
    # A view of an output would read memory the caller owns only after `run` returns; fine, but a
    # view *into which an output aliases* cannot happen: outputs are never views (checked above).
