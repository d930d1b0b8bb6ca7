"""ONNX export of recurrent cells: a scan whose body is an LSTM, GRU or simple-RNN cell becomes one
ONNX LSTM/GRU/RNN node (which SOFIE's parser reads); anything else, near misses included, stays
an ONNX Loop. Every export is checked with onnx.checker and run in onnxruntime against JAX.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import jaxpr2sofie as j2s  # noqa: E402
from jaxpr2sofie.errors import UnsupportedPrimitiveError  # noqa: E402
from jaxpr2sofie.ir.dims import Sym  # noqa: E402
from jaxpr2sofie.onnx import SOFIE_OPS, model_op_types, rnn, to_onnx  # noqa: E402
from jaxpr2sofie.ir.graph import Graph  # noqa: E402
from jaxpr2sofie.ir.ops.control import Loop  # noqa: E402
from jaxpr2sofie.ir.ops.elementwise import Elementwise  # noqa: E402
from jaxpr2sofie.ir.ops.linalg import MatMul  # noqa: E402
from jaxpr2sofie.ir.ops.movement import Transpose  # noqa: E402

from helpers import assert_close  # noqa: E402
from test_onnx import ATOL, _keras, export_and_check, run_onnx  # noqa: E402

SEQ, FEATURES, UNITS = 6, 3, 5


def _inputs(batch, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, SEQ, FEATURES)).astype(np.float32) * 2.0


def _keras_layer(kind):
    L = _keras().layers
    return {
        "lstm": lambda: L.LSTM(UNITS),
        "lstm_sequences": lambda: L.LSTM(UNITS, return_sequences=True),
        "lstm_backwards": lambda: L.LSTM(UNITS, go_backwards=True, return_sequences=True),
        "gru": lambda: L.GRU(UNITS),                                   # reset_after=True (Keras 3 default)
        "gru_reset_before": lambda: L.GRU(UNITS, reset_after=False, return_sequences=True),
        "gru_backwards": lambda: L.GRU(UNITS, go_backwards=True),
        "simple_rnn": lambda: L.SimpleRNN(UNITS, return_sequences=True),
    }[kind]()


def keras_rnn(kind, batch=None):
    keras = _keras()
    model = keras.Sequential([keras.Input((SEQ, FEATURES)), _keras_layer(kind), keras.layers.Dense(2)])
    return j2s.from_keras(model, _inputs(2), name=f"Keras_{kind}", batch=batch)


def flax_rnn(kind):
    nn = pytest.importorskip("flax.linen")
    cell = {"lstm": nn.LSTMCell, "optimized_lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell,
            "simple": nn.SimpleCell}[kind](UNITS)
    module = nn.RNN(cell)
    x = _inputs(2)
    return j2s.from_flax(module, module.init(jax.random.key(1), x), x, name=f"Flax_{kind}")


# model -> the ONNX node its recurrent layer must become
CELLS = {
    ("keras", "lstm"): "LSTM", ("keras", "lstm_sequences"): "LSTM", ("keras", "lstm_backwards"): "LSTM",
    ("keras", "gru"): "GRU", ("keras", "gru_reset_before"): "GRU", ("keras", "gru_backwards"): "GRU",
    ("keras", "simple_rnn"): "RNN",
    ("flax", "lstm"): "LSTM", ("flax", "optimized_lstm"): "LSTM", ("flax", "gru"): "GRU", ("flax", "simple"): "RNN",
}


def _node(model, op_type):
    nodes = [n for n in model.graph.node if n.op_type == op_type]
    assert len(nodes) == 1, f"expected one {op_type} node, found {model_op_types(model)}"
    return nodes[0]


def _init(model, name):
    return next(onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def assert_cell(model, op_type):
    """One `op_type` node, no Loop, only operators SOFIE's parser reads."""
    types = model_op_types(model)
    _node(model, op_type)
    assert "Loop" not in types and types <= SOFIE_OPS, f"operators SOFIE does not read: {sorted(types - SOFIE_OPS)}"


@pytest.mark.parametrize("framework,kind", list(CELLS), ids=[f"{f}_{k}" for f, k in CELLS])
def test_recurrent_layer_exports_as_one_cell_node(framework, kind):
    m = keras_rnn(kind) if framework == "keras" else flax_rnn(kind)
    model = export_and_check(m, _inputs(2, 1), _inputs(2, 2))
    assert_cell(model, CELLS[framework, kind])
    node = _node(model, CELLS[framework, kind])
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["hidden_size"] == UNITS
    # Keras' LSTM scans backwards; its GRU flips the projected sequence before a forward scan
    assert attrs["direction"] == (b"reverse" if kind == "lstm_backwards" else b"forward")
    if CELLS[framework, kind] == "GRU":
        # Keras 3 and Flax apply the reset after the recurrent product, unless reset_after=False
        assert attrs["linear_before_reset"] == (0 if kind == "gru_reset_before" else 1)


def test_gru_input_projection_hoisted_out_of_the_loop_is_folded_into_w():
    """Keras' GRU projects the whole sequence before its loop: W reads the features, not the projection."""
    model = export_and_check(keras_rnn("gru"), _inputs(2, 3))
    w = _init(model, _node(model, "GRU").input[1])
    assert w.shape == (1, 3 * UNITS, FEATURES)
    products = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    assert len(products) == 1, "only the Dense layer's product is left outside the GRU"


def test_keras_lstm_weights_are_in_onnx_gate_order():
    """Keras stores the LSTM kernel as [i, f, c, o] blocks; ONNX wants [i, o, f, c], each transposed."""
    m = keras_rnn("lstm")
    model = export_and_check(m, _inputs(2, 4))
    node = _node(model, "LSTM")
    kernel = next(t.data for t in m.graph.tensors.values() if t.name.endswith("lstm_cell_kernel"))
    i, f, c, o = np.split(np.asarray(kernel), 4, axis=1)
    np.testing.assert_array_equal(_init(model, node.input[1])[0], np.concatenate([i, o, f, c], axis=1).T)


def _cell_scan(variant):
    """A hand-written LSTM (variant "exact") and near misses a careless matcher would take for one."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((FEATURES, 4 * UNITS)).astype(np.float32) * 0.7
    r = rng.standard_normal((UNITS, 4 * UNITS)).astype(np.float32) * 0.7
    bias = rng.standard_normal(4 * UNITS).astype(np.float32) * 0.3

    def step(carry, x):
        h, c = carry
        z = x @ w + h @ r + bias
        blocks = [z[:, k * UNITS:(k + 1) * UNITS] for k in range(4)]
        # the matcher finds gates by structure, not by the order of their blocks
        i, f, g, o = blocks[::-1] if variant == "blocks_reversed" else blocks
        act = jax.nn.relu if variant == "relu_candidate" else jnp.tanh
        if variant == "peephole":
            f = f + c
        c2 = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * act(g)
        h2 = jax.nn.sigmoid(o) * (c2 if variant == "no_output_tanh" else jnp.tanh(c2))
        return (h2, c2), (c2 if variant == "emits_c" else h2)

    def fn(xs):
        b = xs.shape[0]
        init = (jnp.zeros((b, UNITS), jnp.float32), jnp.zeros((b, UNITS), jnp.float32))
        (h, c), ys = lax.scan(step, init, jnp.swapaxes(xs, 0, 1))
        return h, jnp.swapaxes(ys, 0, 1)

    return j2s.convert(fn, None, _inputs(2), name=f"Cell_{variant}")


@pytest.mark.parametrize("variant", ["exact", "blocks_reversed"])
def test_hand_written_lstm_is_recognised(variant):
    model = export_and_check(_cell_scan(variant), _inputs(2, 5))
    assert_cell(model, "LSTM")


def _gru_scan(one):
    """A hand-written GRU whose update is z h + (one - z) n: ONNX's GRU only when one is 1."""
    rng = np.random.default_rng(12)
    w = rng.standard_normal((FEATURES, 3 * UNITS)).astype(np.float32) * 0.7
    r = rng.standard_normal((UNITS, 3 * UNITS)).astype(np.float32) * 0.7

    def step(h, x):
        xz, xr, xn = jnp.split(x @ w, 3, axis=1)
        hz, hr, hn = jnp.split(h @ r, 3, axis=1)
        z, rr = jax.nn.sigmoid(xz + hz), jax.nn.sigmoid(xr + hr)
        h2 = z * h + (one - z) * jnp.tanh(xn + rr * hn)
        return h2, h2

    def fn(xs):
        h, ys = lax.scan(step, jnp.zeros((xs.shape[0], UNITS), jnp.float32), jnp.swapaxes(xs, 0, 1))
        return h, ys

    return j2s.convert(fn, None, _inputs(2), name="HandGRU")


def test_hand_written_gru_is_recognised_and_a_near_miss_is_not():
    assert_cell(export_and_check(_gru_scan(1.0), _inputs(2, 13)), "GRU")
    assert "Loop" in model_op_types(export_and_check(_gru_scan(1.5), _inputs(2, 13)))


@pytest.mark.parametrize("variant", ["relu_candidate", "peephole", "no_output_tanh", "emits_c"])
def test_near_miss_falls_back_to_a_loop(variant):
    """An LSTM-like body that is not ONNX's LSTM stays a Loop, and still matches JAX."""
    model = export_and_check(_cell_scan(variant), _inputs(2, 6))
    types = model_op_types(model)
    assert "Loop" in types and not {"LSTM", "GRU", "RNN"} & types


def test_a_scan_that_is_not_a_cell_stays_a_loop():
    def cumprod(xs):
        return lax.scan(lambda c, x: (c * x, c * x), jnp.ones(xs.shape[1:], xs.dtype), xs)

    xs = np.random.default_rng(8).uniform(0.5, 1.5, (SEQ, 2, UNITS)).astype(np.float32)
    model = export_and_check(j2s.convert(cumprod, None, xs), xs)
    types = model_op_types(model)
    assert "Loop" in types and not {"LSTM", "GRU", "RNN"} & types


def test_recognition_switched_off_gives_the_loop_with_the_same_numbers(monkeypatch):
    m = keras_rnn("lstm_sequences")
    x = _inputs(2, 9)
    cell = export_and_check(m, x)
    monkeypatch.setattr(rnn, "RECOGNISE_CELLS", False)
    loop = export_and_check(m, x)
    assert "Loop" in model_op_types(loop) and "LSTM" in model_op_types(cell)
    assert_close(run_onnx(cell, [x])[0], run_onnx(loop, [x])[0], ATOL)


def _symbolic_rnn_graph():
    """tanh(x_t Wx + h Wh + b) over 4 steps at a run-time batch N, built operator by operator."""
    rng = np.random.default_rng(10)
    wx, wh = (rng.standard_normal(s).astype(np.float32) * 0.6 for s in ((FEATURES, UNITS), (UNITS, UNITS)))
    b = rng.standard_normal((1, UNITS)).astype(np.float32) * 0.3
    n = Sym.batch()
    g = Graph("SymRNN")
    x = g.add_input("x", (n, 4, FEATURES), "float32")
    h0 = g.add_input("h0", (n, UNITS), "float32")
    (xt,) = g.add_op(Transpose([x], perm=(1, 0, 2)))
    state = g.add_tensor("carry", (n, UNITS), "float32", "intermediate")
    step = g.add_tensor("x_step", (n, FEATURES), "float32", "slice")
    body = g.child([state, step])
    (a,) = body.add_op(MatMul([step, g.add_weight("wx", wx)], m=n, k=FEATURES, n=UNITS, out_shape=(n, UNITS)))
    (r,) = body.add_op(MatMul([state, g.add_weight("wh", wh), g.add_weight("b", b)], m=n, k=UNITS, n=UNITS,
                              out_shape=(n, UNITS)))
    (s,) = body.add_op(Elementwise.make("add", [a, r], "float32"))
    (h,) = body.add_op(Elementwise.make("tanh", [s], "float32"))
    body.outputs = [h, h]
    loop = Loop([h0, xt], body=body, n_carry=1, n_xs=1, length=4)
    loop.refresh()
    g.outputs = g.add_op(loop)

    def reference(xs, hs):
        ys = []
        for t in range(4):
            hs = np.tanh(xs[:, t] @ wx + hs @ wh + b)
            ys.append(hs)
        return hs, np.stack(ys)

    return g, reference


def test_symbolic_batch_keeps_dim_param_n():
    g, reference = _symbolic_rnn_graph()
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    assert_cell(model, "RNN")
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for batch in (1, 7):
        rng = np.random.default_rng(batch)
        xs = rng.standard_normal((batch, 4, FEATURES)).astype(np.float32)
        hs = rng.standard_normal((batch, UNITS)).astype(np.float32)
        for got, want in zip(run_onnx(model, [xs, hs]), reference(xs, hs)):
            assert_close(got, want.astype(np.float32), ATOL)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_keras_dynamic_batch(kind):
    """A recurrent layer at a run-time batch: one cell node with dim_param N in ONNX, and a C++
    loop over the time steps whose per-step products take the batch at run time."""
    m = keras_rnn(kind, batch="dynamic")
    compiled = m.compile()
    for x in (_inputs(1, 11), _inputs(7, 12), _inputs(40, 13)):
        assert_close(compiled(x), m.reference(x), ATOL, what=f"C++ {kind} batch {x.shape[0]}")
    model = export_and_check(m, _inputs(1, 11), _inputs(7, 12))
    assert_cell(model, {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "RNN"}[kind])
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
