"""The pass infrastructure (use-def index, fixed-point driver) and the elementwise fusion built on it:
what fuses, what must stay in memory, and that fused code computes what JAX does."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxpr2sofie as j2s
from jaxpr2sofie.ir.graph import Graph
from jaxpr2sofie.ir.ops.elementwise import Elementwise
from jaxpr2sofie.ir.ops.fused import FusedElementwise
from jaxpr2sofie.ir.ops.linalg import MatMul
from jaxpr2sofie.ir.usedef import UseDef, fixed_point
from jaxpr2sofie.cpp import memory

from helpers import assert_close, convert_and_check

rng = np.random.default_rng(7)


def _fused(g) -> list:
    return [op for op in g.walk() if isinstance(op, FusedElementwise)]


def _block(p, x):
    """A transformer MLP block's elementwise work: GELU, then LayerNorm's normalise-scale-shift."""
    h = jax.nn.gelu(x @ p["w"], approximate=True)
    m = h.mean(-1, keepdims=True)
    v = ((h - m) ** 2).mean(-1, keepdims=True)
    return (h - m) * lax.rsqrt(v + 1e-5) * p["s"] + p["b"]


_P = {"w": rng.standard_normal((16, 32)).astype(np.float32) * 0.5,
      "s": rng.standard_normal(32).astype(np.float32), "b": rng.standard_normal(32).astype(np.float32)}


def _chain_calls(header: str, function: str) -> bool:
    """Whether a fused chain's vector function (one per chain, cpp/ops/fused.py) calls vmath's `function`,
    and the Session calls the chain."""
    bodies = re.findall(r"inline VecF chain\d+_lanes\([^)]*\) \{(.*?)\n\s*\}", header, re.S)
    return "detail::chain0(" in header and any(f"{function}(" in body for body in bodies)


def test_gelu_and_layernorm_chains_run_as_fused_loops_and_match_jax():
    x = rng.standard_normal((6, 16)).astype(np.float32)
    m = convert_and_check(_block, _P, x, atol=1e-5)
    fused = _fused(m.graph)
    kinds = [[s.kind for s in op.steps] for op in fused]
    # all of GELU (tanh included: the loop runs on whole vectors, tanh through vmath), and the
    # LayerNorm scale-and-shift
    assert ["integer_pow", "mul", "add", "mul", "tanh", "add", "mul", "mul"] in kinds, kinds
    assert ["sub", "mul", "mul", "add"] in kinds, kinds
    assert not any(type(op) is Elementwise and op.kind == "tanh" for op in m.graph.ops)
    assert _chain_calls(m.header(), "vm_tanh")
    # the values a fused loop keeps in registers get no memory
    slots, assign = memory.buffer_plan(m.graph)
    internal = {n for op in fused for n in op.internal}
    assert internal and not internal & set(assign)
    assert all(m.graph.tensors[n].kind == "fused" for n in internal)


def test_disabling_the_pass_gives_the_unfused_graph_and_the_same_numbers():
    x = rng.standard_normal((6, 16)).astype(np.float32)
    on = j2s.convert(_block, _P, x)
    off = j2s.convert(_block, _P, x, disable_passes=["fuse_elementwise"])
    assert _fused(on.graph) and not _fused(off.graph)
    assert len(off.graph.ops) > len(on.graph.ops) + 6
    a, b = on.compile()(x), off.compile()(x)
    assert_close(a, b, 1e-6)
    # each step is the unfused operator's own expression: the only difference g++ may make is to
    # contract a multiply and an add of neighbouring steps into one FMA; without that, bit for bit
    strict = ["-O3", "-march=native", "-std=c++17", "-ffp-contract=off"]
    assert np.array_equal(on.compile(flags=strict)(x), off.compile(flags=strict)(x))


def test_fused_chains_at_a_run_time_batch():
    x = rng.standard_normal((5, 16)).astype(np.float32)
    m = j2s.convert(_block, _P, x, batch="dynamic", max_batch=64)
    assert _fused(m.graph)
    c = m.compile()
    for n in (1, 7, 64):
        xn = rng.standard_normal((n, 16)).astype(np.float32)
        assert_close(c(xn), np.asarray(_block(_P, xn)), 1e-5)


def test_a_value_read_by_another_operator_or_returned_stays_in_memory():
    def f(x):
        t = x * 2.0            # read by the chain and by a reduction: materialised once
        u = jnp.sin(x) + 1.0   # a graph output and an operand: stays a real tensor
        return (t + 1.0) * (t - 1.0) * u + t.sum(), u
    x = rng.standard_normal((4, 9)).astype(np.float32)
    m = convert_and_check(f, None, x)
    g = m.graph
    internal = {n for op in _fused(g) for n in op.internal}
    t_op = next(op for op in g.ops if type(op) is Elementwise and op.kind == "mul")
    assert t_op.outputs[0] not in internal
    assert not set(g.outputs) & internal


def test_a_value_two_steps_of_one_chain_read_is_computed_once_inside_it():
    def f(x):
        t = x * 2.0
        return (t + 1.0) * (t - 1.0)
    m = convert_and_check(f, None, rng.standard_normal((4, 9)).astype(np.float32))
    (op,) = m.graph.ops
    assert [s.kind for s in op.steps] == ["mul", "sub", "add", "mul"]


def test_loop_body_chains_fuse_and_carries_stay_in_place():
    """An RNN-style carry updated by a fused chain (leaky integration): one loop per step, written
    straight into the carry's buffer, the same numbers as JAX over many steps."""
    def f(p, xs):
        def step(h, x):
            new = 0.9 * h + 0.1 * jnp.maximum(x @ p["w"], 0.0) - 0.01
            return new, new * 2.0
        return lax.scan(step, jnp.zeros((1, 8), np.float32), xs)
    p = {"w": rng.standard_normal((3, 8)).astype(np.float32)}
    xs = rng.standard_normal((50, 1, 3)).astype(np.float32)
    m = convert_and_check(f, p, xs, atol=1e-5)
    (loop,) = [op for op in m.graph.ops if op.subgraphs()]
    assert any(isinstance(op, FusedElementwise) for op in loop.body.ops)


def _tiny_graph():
    """x @ w + b, then relu, built by hand: the rules below work on it."""
    g = Graph("Tiny")
    x = g.add_input("x", (2, 3), "float32")
    w = g.add_weight("w", np.ones((3, 4), np.float32))
    b = g.add_weight("b", np.ones(4, np.float32))
    (y,) = g.add_op(MatMul([x, w], m=2, k=3, n=4, out_shape=(2, 4)))
    (z,) = g.add_op(Elementwise.make("add", (y, b), "float32"))
    (r,) = g.add_op(Elementwise.make("relu", (z,), "float32"))
    g.outputs = [r]
    return g


def test_use_def_index_follows_the_edits_of_a_fixed_point_rewrite():
    from jaxpr2sofie.passes.fusion import _absorb_bias, _absorb_relu
    g = _tiny_graph()
    (mm, add, relu) = g.ops
    assert fixed_point(g, _absorb_bias) == 1
    assert fixed_point(g, _absorb_relu) == 1
    assert g.ops == [mm] and mm.act == "relu" and mm.outputs == g.outputs and len(mm.inputs) == 3
    ud = UseDef(g)
    assert ud.producer(g.outputs[0]) is mm and ud.consumers(mm.inputs[0]) == [mm]
    assert fixed_point(g, _absorb_bias) == 0   # nothing left to do: the driver stops


def test_a_rule_that_never_settles_is_reported():
    g = _tiny_graph()

    def flip(g, ud, op):
        return True
    try:
        fixed_point(g, flip, limit=50)
    except RuntimeError as e:
        assert "did not settle" in str(e) and "flip" in str(e)
    else:
        raise AssertionError("a rule that always reports a change must not loop forever")


def test_vector_chains_keep_special_values_and_every_length():
    """A chain through exp, tanh, logistic, relu and literal max/min runs on whole vectors, with a
    zero-padded tail: NaN, +-inf and signed zeros come out as JAX has them, at lengths that are
    not a multiple of the vector width too."""
    def f(xy):
        x, y = xy
        return (jax.nn.gelu(x, approximate=True) * jax.nn.sigmoid(y) + jnp.maximum(jnp.exp(x * 0.1), 0.0)
                - jnp.minimum(jax.nn.relu(y), -0.0))
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 90.0, -90.0, 1e-30], np.float32)
    for n in (1, 7, 8, 45, 200):   # 200: past 64 elements the chain runs in the widest vector tier
        x = rng.standard_normal(n).astype(np.float32) * 4
        y = rng.standard_normal(n).astype(np.float32) * 4
        x[: min(n, 8)] = specials[: min(n, 8)]
        y[: min(n, 8)] = specials[::-1][: min(n, 8)]
        m = j2s.convert(f, None, (x, y))
        (op,) = m.graph.ops
        assert isinstance(op, FusedElementwise) and _chain_calls(m.header(), "vm_exp")
        got, want = m.compile()(x, y), np.asarray(f((x, y)))
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
        zero = want == 0
        assert np.array_equal(np.signbit(got[zero]), np.signbit(want[zero]))


def test_tanh_stays_alone_when_its_chain_cannot_run_as_vectors():
    # the row vector `r` broadcasts: a scalar loop would call libm's tanh, slower than vmath alone
    def f(xr):
        x, r = xr
        return jnp.tanh(x) * r + 1.0
    m = convert_and_check(f, None, (rng.standard_normal((3, 8)).astype(np.float32),
                                    rng.standard_normal(8).astype(np.float32)))
    assert any(type(op) is Elementwise and op.kind == "tanh" for op in m.graph.ops)
    assert [s.kind for s in _fused(m.graph)[0].steps] == ["mul", "add"]


def test_fused_chains_split_over_threads():
    """A fused loop keeps the rows apart like the operators it replaces: the block splits over two
    threads and matches JAX on both."""
    m = j2s.convert(_block, _P, np.zeros((4, 16), np.float32), batch="dynamic", max_batch=64)
    assert _fused(m.graph)
    c = m.compile(n_threads=2)
    assert c.splittable
    c.set_min_rows_per_thread(1)
    for n in (7, 64):
        xn = rng.standard_normal((n, 16)).astype(np.float32)
        assert_close(c(xn), np.asarray(_block(_P, xn)), 1e-5)
        assert c.threads_used() == 2
