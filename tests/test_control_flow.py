"""Loops and branches stay loops and branches in C++: one compiled model, different inputs take
different paths; code size does not grow with a trip count; the memory plan respects loops."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxpr2sofie as j2s
from jaxpr2sofie.ir.graph import touched
from jaxpr2sofie.cpp import memory

from helpers import convert_and_check

rng = np.random.default_rng(7)


def test_while_runs_a_data_dependent_number_of_iterations():
    def f(x):
        return lax.while_loop(lambda c: c[1].sum() < 100.0, lambda c: (c[0] + 1, c[1] * 2.0 + 0.5),
                              (jnp.int32(0), jnp.abs(x)))
    xs = [np.full((2, 3), v, np.float32) for v in (0.01, 1.0, 10.0, 200.0)]
    counts = [int(f(x)[0]) for x in xs]
    assert len(set(counts)) == 4 and counts[-1] == 0      # the inputs really take different paths
    convert_and_check(f, None, xs[0], extra_inputs=xs[1:])


def test_cond_takes_both_branches_at_run_time():
    f = lambda x: lax.cond(x.sum() > 0, lambda a: a * 2.0, lambda a: jnp.cos(a) - 5.0, x)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    m = convert_and_check(f, None, np.abs(x), extra_inputs=[-np.abs(x)])
    assert "If" in {op.op_type for op in m.graph.ops}


def test_switch_picks_each_index_and_clamps_out_of_range():
    def f(i, x):
        return lax.switch(i, [lambda a: a + 1.0, lambda a: jnp.sin(a) * 3.0, lambda a: a @ a.T @ a], x)
    x = rng.standard_normal((3, 3)).astype(np.float32)
    inputs = [(np.int32(k), x) for k in (0, 1, 2, -4, 9)]     # -4 and 9 clamp to 0 and 2, as in JAX
    convert_and_check(lambda xs: f(*xs), None, inputs[0], extra_inputs=inputs[1:])


def test_fori_loop_with_runtime_bound():
    f = lambda xs: lax.fori_loop(0, xs[0], lambda i, a: a * 0.5 + i, xs[1])
    x = rng.standard_normal(3).astype(np.float32)
    convert_and_check(f, None, (np.int32(4), x), extra_inputs=[(np.int32(0), x), (np.int32(11), x)])


def _rnn_header(steps: int) -> str:
    p = {"wx": rng.standard_normal((3, 8)).astype(np.float32), "wh": rng.standard_normal((8, 8)).astype(np.float32)}

    def rnn(p, xs):
        h, ys = lax.scan(lambda h, x: (jnp.tanh(x @ p["wx"] + h @ p["wh"]),) * 2, jnp.zeros((1, 8)), xs)
        return h, ys
    return j2s.convert(rnn, p, np.zeros((steps, 1, 3), np.float32), name="Rnn").header()


def test_code_size_does_not_grow_with_sequence_length():
    short, long = _rnn_header(20), _rnn_header(2000)
    assert abs(len(long) - len(short)) <= 0.1 * len(short)
    assert long.count("for (size_t step") == 1


def test_long_rnn_scan_matches_jax():
    p = {"wx": rng.standard_normal((3, 8)).astype(np.float32) * 0.3,
         "wh": rng.standard_normal((8, 8)).astype(np.float32) * 0.3}

    def rnn(p, xs):
        return lax.scan(lambda h, x: (jnp.tanh(x @ p["wx"] + h @ p["wh"]),) * 2, jnp.zeros((1, 8)), xs)
    convert_and_check(rnn, p, rng.standard_normal((2500, 1, 3)).astype(np.float32), atol=1e-4)


def test_loop_buffers_outer_tensors_and_carries_are_never_shared_inside_the_loop():
    def f(x, y):
        a = jnp.tanh(x) * 2.0                     # read inside the body: must outlive the loop
        def step(c, v):
            h = jnp.sin(c + v * a)
            for _ in range(4):                    # a chain of body intermediates that can share buffers
                h = jnp.cos(h) * 0.5 + h
            return h, c * a
        c, ys = lax.scan(step, jnp.zeros(4), y)
        return c + 1.0, ys * 3.0
    x, y = rng.standard_normal(4).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)
    # unfused, so that the body's chain leaves intermediates in memory for the plan to share
    m = convert_and_check(lambda xs: f(*xs), None, (x, y), disable_passes=["fuse_elementwise"])
    g = m.graph
    slots, assign = memory.buffer_plan(g)
    base = memory.plan(g)
    (loop,) = [op for op in g.ops if op.subgraphs()]
    slot = lambda n: assign.get(base[n])
    pinned = {base[n] for n in [*loop.inputs, *loop.outputs, *loop.body.inputs] if slot(n) is not None}
    inside = {base[n] for n in touched(loop) if slot(n) is not None} - pinned
    assert len({slot(n) for n in pinned}) == len(pinned), "two tensors the whole loop needs share a buffer"
    assert not {slot(n) for n in pinned} & {slot(n) for n in inside}, "a body tensor reuses a buffer the loop needs"
    assert len({slot(n) for n in inside}) < len(inside), "body intermediates should share buffers"


def test_branches_share_memory():
    def f(x):
        def heavy(a, k):
            for _ in range(3):
                a = jnp.sin(a * k) + a
            return a
        return lax.switch(jnp.argmax(x[0]).astype(jnp.int32), [lambda a: heavy(a, 1.0), lambda a: heavy(a, 2.0),
                                                              lambda a: heavy(a, 3.0)], x)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    inputs = [x.copy() for _ in range(3)]
    for k, v in enumerate(inputs):
        v[0, k] = 9.0
    m = convert_and_check(f, None, inputs[0], extra_inputs=inputs[1:])
    (switch,) = [op for op in m.graph.ops if op.subgraphs()]
    slots, assign = memory.buffer_plan(m.graph)
    per_branch = [{assign[n] for op in b.ops for n in touched(op) if n in assign} for b in switch.branches]
    assert per_branch[0] & per_branch[1] & per_branch[2], "the branches should reuse each other's buffers"


def test_dynamic_slice_and_update_at_an_index_computed_from_the_input():
    def f(x):
        i = jnp.argmax(x[:, 0]).astype(jnp.int32) - 1          # may be -1: clamped as JAX clamps
        window = lax.dynamic_slice(x, (i, 1), (3, 2))
        return window, lax.dynamic_update_slice(x, window * -1.0, (i + 2, 0))
    base = rng.standard_normal((6, 4)).astype(np.float32)
    inputs = []
    for row in (0, 2, 5):
        x = base.copy()
        x[row, 0] = 10.0
        inputs.append(x)
    convert_and_check(f, None, inputs[0], extra_inputs=inputs[1:])


def test_branches_and_loops_nested_in_each_other():
    def f(x):
        def body(c, v):
            c = lax.cond(v.sum() > 0, lambda a: a + v, lambda a: a * 0.5 - v, c)          # If in a scan
            n, c = lax.while_loop(lambda s: s[1].sum() > 1.0, lambda s: (s[0] + 1, s[1] * 0.7), (0, c))   # while in a scan
            return c, n
        c, ns = lax.scan(body, jnp.ones(3), x)
        y = lax.cond(c.sum() > 0.5, lambda a: lax.scan(lambda q, r: (q * r, q), a, x)[0], lambda a: a, c)   # scan in an If
        return c, ns, y
    xs = [rng.standard_normal((6, 3)).astype(np.float32) for _ in range(4)]
    m = convert_and_check(f, None, xs[0], extra_inputs=xs[1:])
    assert [op.op_type for op in m.graph.ops if op.subgraphs()] == ["Loop", "If"]


def _carries_in_place(m):
    """The scan's Loop operator, and per carry whether its new value shares the state's buffer."""
    loop = next(op for op in m.graph.walk() if type(op).__name__ == "Loop")
    base = memory.plan(m.graph)
    nc = loop.n_carry
    return loop, [base[new] == base[state] for new, state in zip(loop.body.outputs[:nc], loop.body.inputs[:nc])]


def test_scan_carries_are_updated_in_place_when_safe():
    """An RNN state (last written by tanh) and a counter (state + 1, read element for element) are
    written straight into the carry state: no copy per step. A carry whose old value is read after
    the new one is made keeps its copy; in a swap of two carries only the second move can write in
    place (the first one's old value is read by it); all match JAX."""
    rng = np.random.default_rng(0)
    w, u = rng.standard_normal((8, 8)).astype(np.float32) / 3, rng.standard_normal((4, 8)).astype(np.float32)

    def rnn(xs):
        def cell(c, x):
            h, k = c
            h = jnp.tanh(h @ w + x @ u)
            return (h, k + 1.0), h
        (h, k), ys = lax.scan(cell, (jnp.zeros((2, 8), jnp.float32), jnp.zeros((2, 8), jnp.float32)), xs)
        return h, k, ys

    xs = rng.standard_normal((30, 2, 4)).astype(np.float32)
    m = convert_and_check(rnn, None, xs, name="InPlaceRnn")
    loop, shared = _carries_in_place(m)
    assert shared == [True, True]
    hxx = m.header()
    for new in loop.body.outputs[:2]:   # no copy of a new carry back into its state
        assert f"std::copy_n(tensor_{new}," not in hxx

    def late_read_and_swap(xs):
        def body(c, x):
            a, b, s = c
            s2 = s * 0.5 + x            # the new s ...
            y = s + s2                   # ... and the old s read after it: s keeps its copy
            return (b, a, s2), y         # a and b swap: b's old value moves out first, then a moves into b
        (a, b, s), ys = lax.scan(body, (xs[0], xs[1], xs[2]), xs)
        return a, b, s, ys

    m = convert_and_check(late_read_and_swap, None, xs[:, 0], name="NotInPlace")
    _, shared = _carries_in_place(m)
    assert shared == [False, True, False]
