"""Loop (scan, fori_loop, while) as an ONNX Loop.

The body is a sub-graph built by a child Builder (names unique across the model, outer values
captured by name). ONNX Loop body: inputs (iteration number, condition, carries...), outputs
(condition, new carries..., per-step outputs...); the per-step outputs come back stacked along a
new leading axis in iteration order.

- scan / fori_loop (static trip count `length`): the Loop's M input is the count, its condition
  stays true; each step's slice of a sequence xs is a Gather of xs at the step (L-1-step when
  `reverse`), and the stacked ys of a reverse scan are flipped back afterwards. A length-0 scan
  needs no Loop: carries pass through, the ys are empty constants.
- while: no M; the condition sub-graph is exported twice, once on the initial carries (before
  the Loop) and once inside the body on the new carries.

SOFIE's ONNX parser has no Loop operator, so such a model runs in onnxruntime but not through
SOFIE's parser; the C++ export (generate) handles loops natively. A scan whose body is a verified
LSTM, GRU or simple RNN cell is one ONNX LSTM/GRU/RNN node instead (rnn.py), which SOFIE reads.
"""
from __future__ import annotations

import numpy as np

from ..ir.ops.control import Branch, Loop
from . import rnn
from .builder import BEFORE_START, NotExportable, dim_param, exports, onnx_dtype


def _vi(name, shape, dtype):
    from onnx import helper
    return helper.make_tensor_value_info(name, onnx_dtype(dtype), [dim_param(d) for d in shape])


def _walk(c, ops, problems):
    from . import walk_ops
    walk_ops(c, ops, problems)


def _val(b, name):
    """The value of graph tensor `name` at its declared shape (a literal may store a scalar as (1,))."""
    t = b.g.tensors[name]
    if name not in b.env and t.data is not None and np.shape(t.data) != tuple(t.shape):
        return b.const(np.asarray(t.data).reshape(t.shape), "literal")
    return b.value(name)


@exports(Loop)
def _loop(b, op):
    from onnx import helper

    from . import _live

    cell = rnn.match(b.g, op)
    if cell is not None:    # a recurrent cell: one LSTM/GRU/RNN node, which SOFIE's parser reads
        return rnn.export(b, op, cell)
    g, nc = b.g, op.n_carry
    # a literal may be stored with shape (1,) for a scalar tensor: every value at its tensor's shape
    inits = [b.reshape(_val(b, n), g.tensors[s].shape) for n, s in zip(op.inputs[:nc], op.body.inputs[:nc])]
    xs = [_val(b, n) for n in op.inputs[nc:op.n_args]]
    free = {n: b.value(n) for n in op.inputs[op.n_args:]}
    body = op.body
    ys_tensors = body.outputs[nc:]
    if op.length == 0:
        outs = [b.node("Identity", [v], hint="carry", shape=b.shape(v), dtype=b.dtype(v)) for v in inits]
        for y, o in zip(ys_tensors, op.outputs[nc:]):
            t = g.tensors[o]
            outs.append(b.const(np.zeros(t.shape, t.dtype), "empty_ys"))
        return outs

    problems = []
    c = b.child(body)
    c.env.update(free)
    it = c.fresh("iter")
    cond_in = c.fresh("cond_in")
    inputs = [_vi(it, (), "int64"), _vi(cond_in, (), "bool")]
    state = body.inputs[:nc]
    for s in state:
        v = c.fresh(f"{s}_in")
        t = g.tensors[s]
        c.env[s], c.meta[v] = v, (tuple(t.shape), t.dtype)
        inputs.append(_vi(v, t.shape, t.dtype))
    if op.length is not None:
        at = it
        if op.reverse:
            at = c.ew("Sub", c.const(np.asarray(op.length - 1, np.int64), "last_step"), it)
        for x, sl in zip(xs, body.inputs[nc:]):
            t = g.tensors[sl]
            c.env[sl] = c.node("Gather", [x, at], hint=f"{sl}_step", shape=t.shape, dtype=t.dtype, axis=0)
    _walk(c, body.ops, problems)
    if op.length is None:
        c.rename = False
        for s, new in zip(op.cond.inputs, body.outputs[:nc]):
            c.env[s] = c.env[new]
        _walk(c, op.cond.ops, problems)
        cond_out = c.node("Identity", [c.reshape(c.env[op.cond.outputs[0]], ())], hint="cond_out", shape=(),
                          dtype="bool")
    else:
        cond_out = c.node("Identity", [cond_in], hint="cond_out", shape=(), dtype="bool")
    outputs = [_vi(cond_out, (), "bool")]
    out_names = [cond_out]
    for o in body.outputs:
        t = g.tensors[o]
        v = c.node("Identity", [c.reshape(_val(c, o), t.shape)], hint=f"{o}_out", shape=t.shape, dtype=t.dtype)
        out_names.append(v)
        outputs.append(_vi(v, t.shape, t.dtype))
    if problems:
        raise NotExportable("; ".join(f"{t} ({o}): {r}" for t, o, r in problems))
    nodes, body_inits = _live(c, out_names)
    import onnx
    graph = helper.make_graph(nodes, c.fresh(f"{g.name}_loop_body"), inputs=inputs, outputs=outputs,
                              initializer=[onnx.numpy_helper.from_array(a, n) for n, a in body_inits.items()])

    if op.length is None:
        cb = b.child(op.cond)
        cb.rename = False
        cb.env.update(free)
        for s, v in zip(op.cond.inputs, inits):
            cb.env[s] = v
        cond_problems = []
        _walk(cb, op.cond.ops, cond_problems)
        if cond_problems:
            raise NotExportable("; ".join(f"{t} ({o}): {r}" for t, o, r in cond_problems))
        b.nodes.extend(cb.nodes)
        b.inits.update(cb.inits)
        loop_in = ["", b.reshape(cb.env[op.cond.outputs[0]], ())]
    else:
        loop_in = [b.const(np.asarray(op.length, np.int64), "trip_count"), ""]
    outs = b.node("Loop", loop_in + inits, hint="loop", n_out=len(op.outputs), body=graph)
    outs = [outs] if isinstance(outs, str) else list(outs)
    for v, o in zip(outs, op.outputs):
        t = g.tensors[o]
        b.meta[v] = (tuple(t.shape), t.dtype)
    if op.reverse:
        outs[nc:] = [b.slice(v, {0: (-1, BEFORE_START, -1)}) for v in outs[nc:]]
    return outs


# -- Branch (cond / switch) as ONNX If ------------------------------------------------------------

def _branch_graph(b, op, sub, free, problems):
    """One branch as an ONNX graph without inputs (outer values captured by name)."""
    from onnx import helper

    from . import _live, walk_ops
    import onnx

    c = b.child(sub)
    c.env.update(free)
    walk_ops(c, sub.ops, problems)
    outs, vis = [], []
    for o, res in zip(sub.outputs, op.outputs):
        t = b.g.tensors[res]
        v = c.node("Identity", [c.reshape(_val(c, o), t.shape)], hint=f"{res}_branch", shape=t.shape, dtype=t.dtype)
        outs.append(v)
        vis.append(_vi(v, t.shape, t.dtype))
    nodes, inits = _live(c, outs)
    return helper.make_graph(nodes, c.fresh(f"{b.g.name}_branch"), inputs=[], outputs=vis,
                             initializer=[onnx.numpy_helper.from_array(a, n) for n, a in inits.items()])


def _if_graph(b, op, k, idx, free, problems):
    """branches[k:] as one graph: branch k if idx == k, else the rest (nested Ifs)."""
    from onnx import helper

    last = len(op.branches) - 1
    if k == last:
        return _branch_graph(b, op, op.branches[k], free, problems)
    c = b.child(op.branches[k])
    pred = c.ew("Equal", idx, c.const(np.asarray(k, np.int64), "branch_index"), dtype="bool")
    then_g = _branch_graph(c, op, op.branches[k], free, problems)
    else_g = _if_graph(c, op, k + 1, idx, free, problems)
    outs = c.node("If", [pred], hint="switch", n_out=len(op.outputs), then_branch=then_g, else_branch=else_g)
    outs = [outs] if isinstance(outs, str) else list(outs)
    vis = [_vi(v, b.g.tensors[o].shape, b.g.tensors[o].dtype) for v, o in zip(outs, op.outputs)]
    import onnx

    from . import _live
    nodes, inits = _live(c, outs)
    return helper.make_graph(nodes, c.fresh(f"{b.g.name}_switch"), inputs=[], outputs=vis,
                             initializer=[onnx.numpy_helper.from_array(a, n) for n, a in inits.items()])


@exports(Branch)
def _branch(b, op):
    """cond: one If on the boolean (then = branches[1]); switch: the index cast to int64 and clamped
    as lax.switch does, then If(index == 0, branch 0, If(index == 1, ...))."""
    g = b.g
    free = {n: b.value(n) for n in op.inputs[1:]}
    problems = []
    raw = b.reshape(_val(b, op.inputs[0]), ())
    n = len(op.branches)
    if g.tensors[op.inputs[0]].dtype == "bool" and n == 2:
        pred = raw
        then_g = _branch_graph(b, op, op.branches[1], free, problems)
        else_g = _branch_graph(b, op, op.branches[0], free, problems)
    else:
        if g.tensors[op.inputs[0]].dtype == "bool":
            raw = b.cast(raw, "int32")
        idx = b.ew("Max", b.ew("Min", b.cast(raw, "int64"), b.const(np.asarray(n - 1, np.int64), "last_branch")),
                   b.const(np.asarray(0, np.int64), "first_branch"))
        pred = b.ew("Equal", idx, b.const(np.asarray(0, np.int64), "first_branch"), dtype="bool")
        then_g = _branch_graph(b, op, op.branches[0], free, problems)
        else_g = _if_graph(b, op, 1, idx, free, problems)
    if problems:
        raise NotExportable("; ".join(f"{t} ({o}): {r}" for t, o, r in problems))
    outs = b.node("If", [pred], hint="branch", n_out=len(op.outputs), then_branch=then_g, else_branch=else_g)
    outs = [outs] if isinstance(outs, str) else list(outs)
    for v, o in zip(outs, op.outputs):
        b.meta[v] = (tuple(g.tensors[o].shape), g.tensors[o].dtype)
    return outs
