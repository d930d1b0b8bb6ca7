"""ONNX export: every primitive case and the networks of the model tests exported with `to_onnx`,
checked with `onnx.checker` (full_check) and run in onnxruntime against JAX, computed live.

No C++ compiler is involved. Tolerance: float32 |ONNX - JAX| <= 1e-4 * max(1, |JAX|) elementwise
(or the case's own, if looser); ints and bools exact.
"""
from __future__ import annotations

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import jaxpr2sofie as j2s  # noqa: E402
from primitive_cases import all_cases  # noqa: E402
from jaxpr2sofie.ir.dims import Sym  # noqa: E402
from jaxpr2sofie.onnx import DEFAULT_OPSET, SOFIE_OPS, OnnxExportError, model_op_types, to_onnx
from jaxpr2sofie.ir.graph import Graph  # noqa: E402
from jaxpr2sofie.ir.ops.base import Op  # noqa: E402
from jaxpr2sofie.ir.ops.elementwise import Elementwise  # noqa: E402

import test_models as tm  # noqa: E402  (the model builders, not their tests)
from helpers import assert_close  # noqa: E402

ATOL = 1e-4

# Primitive cases the ONNX export cannot run yet: case name -> reason (skipped with the reason). An
# entry goes away once its case passes in onnxruntime. Empty: every operator has a rule.
ONNX_SKIP: dict = {}


def run_onnx(model, flat):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, flat)))


def export_and_check(m, *inputs, atol=ATOL, opset=None):
    """Export `m`, check the model, run it in onnxruntime on every input pytree, compare with JAX."""
    model = m.to_onnx(opset=opset)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert names == list(m.graph.inputs)
    for x in inputs:
        flat = m.flat_inputs(x)
        got = sess.run(None, dict(zip(names, flat)))
        want = m.traced.reference(*flat)
        assert len(got) == len(want)
        for k, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, atol, what=f"{m.name} output {k} (ONNX)")
    return model


# -- (a) every primitive case ---------------------------------------------------------------------

CASES = all_cases()


def _case_param(c):
    marks = [pytest.mark.skip(reason=ONNX_SKIP[c.name])] if c.name in ONNX_SKIP else []
    return pytest.param(c, id=c.name, marks=marks)


@pytest.mark.parametrize("case", [_case_param(c) for c in CASES])
def test_primitive_case_in_onnxruntime(case):
    if case.params is None:
        fn, params = (lambda xs: case.fn(*xs)), None
    else:
        fn, params = (lambda p, xs: case.fn(p, *xs)), case.params
    m = j2s.convert(fn, params, tuple(case.inputs), name="Case")
    export_and_check(m, tuple(case.inputs), atol=max(case.atol, ATOL))


# -- (b) whole models ---------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 16])
def test_mlp(batch):
    x, *more = tm._inputs(batch, batch, 20)
    m = j2s.convert(tm.mlp, tm._mlp_params(), x, name="MLP")
    model = export_and_check(m, x, *more)
    ops = model_op_types(model)
    assert {"Gemm", "Softmax"} <= ops, ops
    # weights are initializers named by their key paths
    inits = {i.name for i in model.graph.initializer}
    assert {"layers_0_kernel", "layers_0_bias", "layers_2_kernel"} <= inits, inits


MODELS = {
    "cnn": (tm.cnn, tm._cnn_params, (2, 2, 16, 16, 3)),
    "ds_cnn": (tm.ds_cnn, tm._dsc_params, (3, 2, 12, 12, 3)),
    "conv1d": (tm.conv1d_net, tm._conv1d_params, (5, 3, 48, 2)),
    "conv3d": (tm.conv3d_net, tm._conv3d_params, (7, 2, 6, 8, 8, 1)),
    "jit_mlp": (jax.jit(tm.mlp), tm._mlp_params, (10, 4, 20)),
    "no_params": (tm._standardise_and_score, lambda: None, (11, 3, 7)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model(name):
    fn, params, (seed, *shape) = MODELS[name]
    x, *more = tm._inputs(seed, *shape)
    export_and_check(j2s.convert(fn, params(), x, name=name), x, *more)


def test_several_inputs_and_outputs():
    rng = np.random.default_rng(9)
    xs = [{"leptons": rng.standard_normal((5, 3)).astype(np.float32),
           "jets": rng.standard_normal((5, 4)).astype(np.float32)} for _ in range(2)]
    m = j2s.convert(tm.two_tower, tm._multi_params(), xs[0], name="TwoTower")
    model = export_and_check(m, *xs)
    assert [o.name for o in model.graph.output] == list(m.graph.outputs)
    assert len(model.graph.output) == 4


def test_an_input_the_model_ignores():
    rng = np.random.default_rng(12)
    x = {k: rng.standard_normal((5, n)).astype(np.float32) for k, n in (("jets", 4), ("leptons", 3), ("run", 1))}
    m = j2s.convert(lambda p, x: tm.two_tower(p, x)[0], tm._multi_params(), x, name="Ignores")
    model = export_and_check(m, x)
    assert len(model.graph.input) == 3


@pytest.mark.parametrize("seed", range(20))
def test_random_program(seed):
    prog = tm.RandomProgram(seed)
    m = j2s.convert(prog, prog.params, prog.inputs, name=f"Random{seed}")
    try:
        export_and_check(m, prog.inputs)
    except AssertionError as e:
        raise AssertionError(f"seed {seed}: program {prog!r}\n{e}") from None


@pytest.mark.parametrize("opset", [17, 21])
def test_other_opsets(opset):
    x, *more = tm._inputs(2, 2, 16, 16, 3)
    model = export_and_check(j2s.convert(tm.cnn, tm._cnn_params(), x, name="CNN"), x, opset=opset)
    assert model.opset_import[0].version == opset


# Flax and Keras networks built here (small, HEP-sized); built once, shared by several tests
@functools.lru_cache(maxsize=None)
def flax_cnn():
    nn = pytest.importorskip("flax.linen")

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(8, (3, 3))(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2))(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            return nn.softmax(nn.Dense(4)(x.reshape(x.shape[0], -1)))

    x = np.random.default_rng(30).standard_normal((2, 16, 16, 2)).astype(np.float32)
    module = CNN()
    return j2s.from_flax(module, module.init(jax.random.key(0), x), x, name="FlaxCNN"), x


def _keras():
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"     # Keras picks its backend at import
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("Keras was imported with another backend")
    keras.utils.set_random_seed(0)
    return keras


@functools.lru_cache(maxsize=None)
def keras_model(kind):
    keras = _keras()
    L = keras.layers
    rng = np.random.default_rng(31)
    if kind == "mlp":
        model = keras.Sequential([keras.Input((12,)), L.Dense(16, activation="relu"), L.Dense(16, activation="tanh"),
                                  L.Dense(3, activation="softmax")])
        x = rng.standard_normal((4, 12))
    elif kind == "cnn":
        model = keras.Sequential([keras.Input((12, 12, 2)), L.Conv2D(6, 3, strides=2, padding="same", activation="relu"),
                                  L.MaxPooling2D(2), L.Conv2D(4, 3, padding="same", activation="relu"),
                                  L.Flatten(), L.Dense(3, activation="softmax")])
        x = rng.standard_normal((2, 12, 12, 2))
    else:
        model = keras.Sequential([keras.Input((6, 3)), L.LSTM(5), L.Dense(2)])
        x = rng.standard_normal((2, 6, 3))
    x = x.astype(np.float32)
    return j2s.from_keras(model, example_input=x, name=f"Keras{kind.upper()}"), x


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_keras(kind):
    m, x = keras_model(kind)
    export_and_check(m, x)


def test_keras_lstm_exports_as_an_onnx_lstm():
    """Keras' LSTM is a run-time loop over time steps whose body is recognised as an LSTM cell: one
    ONNX LSTM node, which SOFIE's parser reads (tests/test_onnx_rnn.py covers the other cells)."""
    m, x = keras_model("lstm")
    model = export_and_check(m, x)
    assert "LSTM" in model_op_types(model) and "Loop" not in model_op_types(model)


def test_flax_cnn():
    m, x = flax_cnn()
    export_and_check(m, x)


# -- (c) what SOFIE's parser will read ----------------------------------------------------------

def _hep_models():
    yield "mlp", j2s.convert(tm.mlp, tm._mlp_params(), tm._inputs(1, 1, 20)[0], name="MLP")
    yield "cnn", j2s.convert(tm.cnn, tm._cnn_params(), tm._inputs(2, 2, 16, 16, 3)[0], name="CNN")
    yield "two_tower", j2s.convert(tm.two_tower, tm._multi_params(),
                                   {"jets": np.ones((1, 4), np.float32), "leptons": np.ones((1, 3), np.float32)})
    yield "standardise_softplus", j2s.convert(tm._standardise_and_score, None, np.ones((2, 7), np.float32))
    yield "flax_cnn", flax_cnn()[0]
    for kind in ("mlp", "cnn", "lstm"):     # the LSTM exports as one ONNX LSTM node
        yield f"keras_{kind}", keras_model(kind)[0]


def test_hep_models_use_only_sofie_operators():
    for name, m in _hep_models():
        extra = model_op_types(m.to_onnx()) - SOFIE_OPS
        assert not extra, f"{name}: operators SOFIE's ONNX parser does not read: {sorted(extra)}"


def test_asymmetric_convolution_padding_is_an_explicit_pad():
    """SOFIE's parser averages asymmetric Conv pads; the export pads explicitly and keeps Conv pads symmetric."""
    m, x = keras_model("cnn")      # 'same' with stride 2 on an even size pads (0, 1)
    model = m.to_onnx()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and "Pad" in model_op_types(model)
    for n in convs:
        pads = next(list(a.ints) for a in n.attribute if a.name == "pads")
        half = len(pads) // 2
        assert pads[:half] == pads[half:], pads


def test_gemm_without_bias_has_no_c_input():
    w = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    m = j2s.convert(lambda w, x: lax.dot_general(x, w, (((1,), (1,)), ((), ()))), w, np.ones((2, 4), np.float32))
    model = m.to_onnx()
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert gemms and all(len(n.input) == 2 for n in gemms), model.graph.node


# -- files, dims, errors ------------------------------------------------------------------------

def test_writes_a_file_without_a_compiler(tmp_path, monkeypatch):
    import jaxpr2sofie.cpp.build as build

    def no_compiler(*a, **k):
        raise AssertionError("to_onnx must not compile C++")

    monkeypatch.setattr(build, "compile_library", no_compiler)
    x = tm._inputs(1, 2, 20)[0]
    m = j2s.convert(tm.mlp, tm._mlp_params(), x, name="MLP")
    path = tmp_path / "sub" / "mlp.onnx"
    returned = m.to_onnx(path)
    loaded = onnx.load(str(path))
    assert loaded == returned and loaded.opset_import[0].version == DEFAULT_OPSET
    assert_close(run_onnx(loaded, [x])[0], m.reference(x), ATOL)


def test_symbolic_dimension_becomes_dim_param():
    g = Graph("Dyn")
    x = g.add_input("x", (Sym.batch(), 4), "float32")
    w = g.add_weight("w", np.arange(4, dtype=np.float32))
    (h,) = g.add_op(Elementwise.make("mul", [x, w], "float32"))
    (y,) = g.add_op(Elementwise.make("tanh", [h], "float32"))
    g.outputs = [y]
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 4
    for n in (1, 7):
        xs = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
        assert_close(run_onnx(model, [xs])[0], np.tanh(xs * np.arange(4, dtype=np.float32)), ATOL)


class Mystery(Op):
    def infer(self, g):
        return [(g.tensors[self.inputs[0]].shape, "float32")]


def test_operators_without_an_export_rule_are_all_listed():
    g = Graph("Odd")
    x = g.add_input("x", (2, 3), "float32")
    (a,) = g.add_op(Mystery([x], origin="mystery @ model.py:10"))
    (b,) = g.add_op(Mystery([a], origin="mystery @ model.py:11"))
    g.outputs = [b]
    with pytest.raises(OnnxExportError) as err:
        to_onnx(g)
    msg = str(err.value)
    assert "2 operator(s)" in msg and "model.py:10" in msg and "model.py:11" in msg and "Mystery" in msg
    assert isinstance(err.value, j2s.Jaxpr2SofieError)


def test_configuration_without_an_onnx_form_names_the_line():
    """Bitwise operators on integers exist from opset 18: at 17 every use is reported, with its line."""
    m = j2s.convert(lambda ab: (ab[0] & ab[1]) | (ab[0] ^ ab[1]), None, (np.ones((2, 3), np.int32), np.ones((2, 3), np.int32)))
    with pytest.raises(OnnxExportError) as err:
        m.to_onnx(opset=17)
    msg = str(err.value)
    assert msg.startswith("3 operator(s)") and "opset 18" in msg and "test_onnx.py" in msg, msg
    export_and_check(m, (np.arange(6, dtype=np.int32).reshape(2, 3), np.full((2, 3), 5, np.int32)))


def test_runtime_loop_error_names_the_operator_and_its_line():
    """A run-time loop whose body holds an operator without an ONNX form is refused; the error lists
    the Loop with the primitive and source line it came from, and the body operator's reason."""
    def fn(x):
        return lax.fori_loop(0, 3, lambda i, c: c.at[jnp.array([0, 0])].min(c[1]), x)   # the loop (scatter-min: opset 18)

    line = fn.__code__.co_firstlineno + 1
    m = j2s.convert(fn, None, np.ones((2, 3), np.float32))
    with pytest.raises(OnnxExportError) as err:
        m.to_onnx(opset=17)
    msg = str(err.value)
    assert msg.startswith("1 operator(s)"), msg
    assert f"test_onnx.py:{line}" in msg and "Loop" in msg, msg
    (op_type, origin, reason), = err.value.problems
    assert op_type == "Loop" and f"test_onnx.py:{line}" in origin and "Scatter" in reason, reason


def test_loop_exports_as_onnx_loop():
    """A fori_loop with a static trip count is one ONNX Loop whose body is its sub-graph."""
    m = j2s.convert(lambda x: lax.fori_loop(0, 3, lambda i, c: jnp.tanh(c) * 2.0, x), None,
                    np.ones((2, 3), np.float32))
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    model = export_and_check(m, x)
    loops = [n for n in model.graph.node if n.op_type == "Loop"]
    assert len(loops) == 1
    body = loops[0].attribute[0].g
    assert {"Tanh", "Mul"} <= {n.op_type for n in body.node}


def test_switch_exports_as_nested_ifs_with_the_index_clamped():
    """lax.switch over 3 branches: If(index == 0, ..., If(index == 1, ..., ...)), the index clamped
    into range as lax.switch does (checked with out-of-range indices)."""
    def fn(a):
        i, x = a
        return lax.switch(i, [jnp.tanh, lambda v: v * 3.0, lambda v: v - 1.0], x)

    x = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    m = j2s.convert(fn, None, (np.int32(0), x))
    model = export_and_check(m, *[(np.int32(i), x) for i in (-2, 0, 1, 2, 7)])
    assert "If" in model_op_types(model)


def test_unknown_opset_is_refused():
    m = j2s.convert(jnp.tanh, None, np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="opset 12"):
        m.to_onnx(opset=12)


def test_cnn_stays_nchw_between_layers():
    """NHWC in: one Transpose in, one before the flatten; ReLU and pools run in NCHW; each bias is
    its Conv's own input; the average pool (window sum / 16) is one AveragePool."""
    x = tm._inputs(2, 2, 16, 16, 3)[0]
    model = j2s.convert(tm.cnn, tm._cnn_params(), x, name="CNN").to_onnx()
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Transpose", "Conv", "Relu", "MaxPool", "Conv", "Relu", "AveragePool", "Transpose", "Reshape",
                   "Gemm", "Softmax"], ops
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert [list(n.input[1:]) for n in convs] == [["conv1_kernel", "conv1_bias"], ["conv2_kernel", "conv2_bias"]]
    kernel = next(i for i in model.graph.initializer if i.name == "conv1_kernel")
    assert list(kernel.dims) == [8, 3, 3, 3]   # HWIO permuted to OIHW at export time, name kept


def test_elementwise_after_conv_runs_in_nchw():
    """A per-channel scale after a Conv (batch norm) is applied in NCHW with the weight permuted."""
    fn = lambda p, x: jnp.tanh(tm._conv2d(x, p) * p["scale"])
    p = {**tm._cnn_params()["conv1"], "scale": np.linspace(0.5, 1.5, 8, dtype=np.float32)}
    x = tm._inputs(3, 2, 6, 6, 3)[0]
    model = export_and_check(j2s.convert(fn, p, x, name="Scaled"), x)
    assert [n.op_type for n in model.graph.node] == ["Transpose", "Conv", "Mul", "Tanh", "Transpose"]
    scale = next(i for i in model.graph.initializer if i.name == "scale")
    assert list(scale.dims) == [1, 8, 1, 1]


def test_transposes_around_convolutions_fold():
    """NCHW in, NCHW out: the NHWC round trip of the canonical Conv leaves no Transpose in the export."""
    k = np.random.default_rng(3).standard_normal((4, 3, 3, 3)).astype(np.float32)
    fn = lambda k, x: jax.nn.relu(lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")))
    x = np.random.default_rng(4).standard_normal((1, 3, 6, 6)).astype(np.float32)
    model = export_and_check(j2s.convert(fn, k, x, name="NCHW"), x)
    assert "Transpose" not in model_op_types(model), [n.op_type for n in model.graph.node]


def test_reductions_over_a_zero_size_axis_give_their_identity():
    """Reducing an axis of size 0 (output not empty) is the reduction's identity, combined with the
    initial value; an output with no element is an empty constant (no zero-channel MaxPool)."""
    def fn(x):
        e = x[:, :0]
        return (jnp.max(e, axis=1, initial=-1.0), jnp.min(e, axis=1, initial=2.0), e.sum(axis=1) + x[:, 0], jnp.max(e, axis=0))

    x = np.random.default_rng(6).standard_normal((3, 4)).astype(np.float32)
    export_and_check(j2s.convert(fn, None, x), x)


# -- scatter: what the primitive cases do not reach ------------------------------------------------

_x53 = np.arange(15, dtype=np.float32).reshape(5, 3) - 7.0
_u53 = np.random.default_rng(7).standard_normal((5, 3)).astype(np.float32)
_rows = np.array([1, 3, 1, 9, 1], np.int32)          # row 1 three times, row 9 out of range
_pairs = np.array([[0, 1], [2, 5], [-1, 0], [1, 1], [4, 2]], np.int32)
_dn_pairs = lax.ScatterDimensionNumbers(update_window_dims=(1,), inserted_window_dims=(0,),
                                        scatter_dims_to_operand_dims=(0, 1))
SCATTERS = {
    # a plain set that writes one row three times: the last write wins, as in JAX and the C++
    "set_duplicates_last_wins": (lambda x, i, u: x.at[i].set(u), (_x53, _rows, _u53)),
    "set_duplicates_clip": (lambda x, i, u: x.at[i].set(u, mode="clip"), (_x53, _rows, _u53)),
    "set_bool": (lambda x, i, u: x.at[i].set(u), (_x53 > 0, _rows, _u53 > 0)),
    "add_int": (lambda x, i, u: x.at[i].add(u), (_x53.astype(np.int32), _rows, (_u53 * 5).astype(np.int32))),
    "mul_int": (lambda x, i, u: x.at[i].multiply(u), (_x53.astype(np.int32), _rows, (_u53 * 5).astype(np.int32))),
    "min_int": (lambda x, i, u: x.at[i].min(u), (_x53.astype(np.int32), _rows, (_u53 * 5).astype(np.int32))),
    "max_int": (lambda x, i, u: x.at[i].max(u), (_x53.astype(np.int32), _rows, (_u53 * 5).astype(np.int32))),
    # two-component index vectors, windows of 2: a window that does not fit is dropped whole ...
    "add_pairs_drop": (lambda x, i, u: lax.scatter_add(x, i, u, _dn_pairs, mode="drop"), (_x53, _pairs, _u53[:, :2])),
    # ... or clamped so that it fits
    "set_pairs_clip": (lambda x, i, u: lax.scatter(x, i, u, _dn_pairs, mode="clip"), (_x53, _pairs, _u53[:, :2])),
    # vmap of x.at[i]: operand batching dims
    "vmap_set": (jax.vmap(lambda x, i, u: x.at[i].set(u)),
                 (np.stack([_x53, -_x53]), np.array([[1, 1], [2, 0]], np.int32), np.stack([_u53[:2], _u53[2:4]]))),
    "vmap_max": (jax.vmap(lambda x, i, u: x.at[i].max(u)),
                 (np.stack([_x53, -_x53]), np.array([[1, 1], [2, 0]], np.int32), np.stack([_u53[:2], _u53[2:4]]))),
}


@pytest.mark.parametrize("name", list(SCATTERS))
def test_scatter(name):
    fn, xs = SCATTERS[name]
    m = j2s.convert(lambda xs: fn(*xs), None, xs, name="Scatter")
    model = export_and_check(m, xs)
    assert "ScatterND" in model_op_types(model)


def test_scatter_without_an_opset_17_form_is_refused():
    """Min/max reductions of ScatterND, and the last-writer search that makes a plain set with
    repeated indices well defined, exist from opset 18; at 17 the export refuses (a set of one
    window still exports: its elements never collide)."""
    for fn in (lambda x, i, u: x.at[i].min(u), lambda x, i, u: x.at[i].set(u)):
        m = j2s.convert(lambda xs: fn(*xs), None, (_x53, _rows, _u53))
        with pytest.raises(OnnxExportError, match="opset 18"):
            m.to_onnx(opset=17)
    m = j2s.convert(lambda x: x.at[2].set(-1.0), None, _x53)
    export_and_check(m, _x53, opset=17)


def _pool_grad(kind, window, strides, padding):
    init, reducer = (-np.inf, lax.max) if kind == "max" else (np.inf, lax.min)
    return jax.grad(lambda x: (lax.reduce_window(x, init, reducer, window, strides, padding) * 1.5).sum())


_ties = np.round(np.random.default_rng(8).standard_normal((5, 6)).astype(np.float32))
_edges = np.where(np.arange(30).reshape(5, 6) % 4 == 0, -np.inf, np.arange(30).reshape(5, 6) % 3).astype(np.float32)
POOL_GRADS = {
    # min pooling selects with le: the first minimum wins ties
    "min_ties_same": (_pool_grad("min", (2, 3), (1, 2), "SAME"), _ties),
    # padding wider than the window: some windows cover padding only and pick nothing
    "max_padding_only_windows": (_pool_grad("max", (2, 2), (2, 3), ((3, 2), (0, 4))), _ties),
    # -inf elements: padding is never picked, even when it would tie with the real maximum
    "max_minus_inf_at_the_border": (_pool_grad("max", (3, 3), (1, 1), "SAME"), _edges),
    # a window over every axis of an NHWC tensor, overlapping (stride 1 on W)
    "max_4d_overlap": (_pool_grad("max", (1, 2, 3, 2), (1, 2, 1, 2), "SAME"), _ties.reshape(1, 5, 3, 2)),
}


@pytest.mark.parametrize("name", list(POOL_GRADS))
def test_max_pool_gradient(name):
    fn, x = POOL_GRADS[name]
    m = j2s.convert(fn, None, x, name="PoolGrad")
    assert any(type(op).__name__ == "SelectAndScatterAdd" for op in m.graph.ops)
    export_and_check(m, x)


def test_scatter_with_a_symbolic_dimension_is_refused_with_the_reason():
    from jaxpr2sofie.ir.ops.gather import Scatter
    g = Graph("DynScatter")
    x = g.add_input("x", (Sym.batch(), 3), "float32")
    i = g.add_input("i", (2, 1), "int32")
    u = g.add_input("u", (2, 3), "float32")
    (y,) = g.add_op(Scatter([x, i, u], kind="add", update_window_dims=(1,), inserted_window_dims=(0,),
                            scatter_dims_to_operand_dims=(0,), origin="scatter-add @ model.py:3"))
    g.outputs = [y]
    with pytest.raises(OnnxExportError, match="static shapes only") as err:
        to_onnx(g)
    assert "model.py:3" in str(err.value)
