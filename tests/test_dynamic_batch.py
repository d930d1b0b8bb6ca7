"""A batch size chosen at run time (`batch="dynamic"`): an MLP and a CNN from plain JAX, Flax linen,
Flax nnx and Keras, each checked against JAX at batches 1, 7 and the maximum (256) through Python,
and through C++ programs that call `Session(file, max_batch)` and `infer(batch, x)`."""
from __future__ import annotations

import os
import re
import subprocess

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export, lax

import jaxpr2sofie as j2s
from jaxpr2sofie.errors import InputError, TraceError, UnsupportedPrimitiveError
from jaxpr2sofie.cpp import memory

from helpers import assert_close, slow_except
from test_cpp_session import _build, _cxx, _parse, _run, _write_floats

MAX = 256
BATCHES = (1, 7, MAX)
rng = np.random.default_rng(7)


def _w(*shape):
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)


# ------------------------------------------------------------------------------------- models
def jax_mlp():
    p = {"w1": _w(16, 64), "b1": _w(1, 64)[0], "w2": _w(64, 32), "b2": _w(1, 32)[0], "w3": _w(32, 3)}
    fn = lambda p, x: jnp.tanh(jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]) @ p["w3"]
    return fn, p, (16,)


def jax_cnn():
    p = {"k1": _w(3, 3, 2, 8), "c1": _w(1, 8)[0], "k2": _w(3, 3, 8, 8), "d": _w(4 * 4 * 8, 5), "db": _w(1, 5)[0]}

    def fn(p, x):
        dn = ("NHWC", "HWIO", "NHWC")
        h = jax.nn.relu(lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=dn) + p["c1"])
        h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = jax.nn.gelu(lax.conv_general_dilated(h, p["k2"], (1, 1), "SAME", dimension_numbers=dn))
        h = h.reshape(h.shape[0], -1)
        return jax.nn.log_softmax(h @ p["d"] + p["db"])
    return fn, p, (8, 8, 2)


def linen_models():
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.relu(nn.Dense(48)(x))
            x = nn.LayerNorm()(x)
            return nn.Dense(4)(nn.Dropout(0.3, deterministic=not train)(x))

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(6, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.avg_pool(nn.relu(x), (2, 2), (2, 2))
            x = nn.Conv(8, (3, 3), strides=(2, 2), padding="VALID")(x)
            return nn.Dense(3)(x.reshape(x.shape[0], -1))
    out = []
    for module, feat in ((MLP(), (12,)), (CNN(), (10, 10, 3))):
        variables = module.init(jax.random.key(1), np.zeros((1, *feat), np.float32))
        if "batch_stats" in variables:   # random statistics: an untouched BatchNorm would hide errors
            variables = jax.tree_util.tree_map(lambda a: a, dict(variables))
            stats = variables["batch_stats"]
            variables["batch_stats"] = jax.tree_util.tree_map(
                lambda a: jnp.asarray(rng.uniform(0.5, 2.0, a.shape).astype(np.float32)), stats)
        out.append((module, variables, feat))
    return out


def nnx_models():
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(10, 32, rngs=rngs)
            self.b = nnx.Linear(32, 2, rngs=rngs)

        def __call__(self, x):
            return self.b(nnx.gelu(self.a(x)))

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.out = nnx.Linear(4 * 4 * 4, 3, rngs=rngs)

        def __call__(self, x):
            h = nnx.max_pool(nnx.relu(self.bn(self.conv(x))), (2, 2), (2, 2))
            return self.out(h.reshape(h.shape[0], -1))
    cnn = CNN(nnx.Rngs(2))
    cnn.bn.mean[...] = jnp.asarray(rng.standard_normal(4).astype(np.float32))
    cnn.bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, 4).astype(np.float32))
    return [(MLP(nnx.Rngs(1)), (10,)), (cnn, (8, 8, 1))]


def keras_models():
    import keras
    keras.utils.set_random_seed(3)
    mlp = keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"),
                            keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)])
    cnn = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                            keras.layers.BatchNormalization(), keras.layers.MaxPooling2D(),
                            keras.layers.Conv2D(8, 3, padding="same"), keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(4)])
    bn = cnn.layers[1]
    bn.moving_mean.assign(rng.standard_normal(8).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 8).astype(np.float32))
    return [(mlp, (20,)), (cnn, (12, 12, 1))]


def _dynamic_models():
    """(label, make) pairs: make() -> (SofieModel converted with batch="dynamic", feature shape)."""
    def plain(make):
        fn, p, feat = make()
        return j2s.convert(fn, p, np.zeros((4, *feat), np.float32), batch="dynamic", max_batch=MAX), feat

    def linen(k):
        module, variables, feat = linen_models()[k]
        return j2s.from_flax(module, variables, np.zeros((2, *feat), np.float32), batch="dynamic",
                             max_batch=MAX), feat

    def nnx_(k):
        module, feat = nnx_models()[k]
        return j2s.from_nnx(module, np.zeros((2, *feat), np.float32), batch="dynamic", max_batch=MAX), feat

    def keras_(k):
        model, feat = keras_models()[k]
        return j2s.from_keras(model, np.zeros((1, *feat), np.float32), batch="dynamic", max_batch=MAX), feat
    return {"jax_mlp": lambda: plain(jax_mlp), "jax_cnn": lambda: plain(jax_cnn),
            "linen_mlp": lambda: linen(0), "linen_cnn": lambda: linen(1),
            "nnx_mlp": lambda: nnx_(0), "nnx_cnn": lambda: nnx_(1),
            "keras_mlp": lambda: keras_(0), "keras_cnn": lambda: keras_(1)}


MODELS = _dynamic_models()


# each front end's CNN and the plain-JAX MLP in the main command; the front ends' MLPs (about 16 s)
# in the slow set, which .ci/run runs after it
@pytest.mark.parametrize("label", slow_except(MODELS, [k for k in MODELS if k not in ("linen_mlp", "nnx_mlp", "keras_mlp")]))
def test_dynamic_batch_matches_jax_at_1_7_and_max(label):
    m, feat = MODELS[label]()
    assert m.graph.dynamic and m.graph.max_batch == MAX
    compiled = m.compile()
    for n in BATCHES:
        x = rng.standard_normal((n, *feat)).astype(np.float32)
        got = compiled(x)
        assert got.shape[0] == n
        assert_close(got, m.reference(x), 1e-4, what=f"{label} at batch {n}")
    assert compiled.max_batch == MAX          # batches up to max_batch reuse the first Session
    x = rng.standard_normal((MAX + 44, *feat)).astype(np.float32)
    assert_close(compiled(x), m.reference(x), 1e-4, what=f"{label} at batch {MAX + 44}")
    assert compiled.max_batch == MAX + 44     # a larger batch grew the Session
    v = m.validate()
    assert v.batches == (1, 7, MAX) and v.max_rel < 1e-4, v


# --------------------------------------------------------------------- the generated C++ API
CPP_MAIN = r"""
#include "JaxCnn.hxx"
#include "KerasMlp.hxx"
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <vector>

template <class S>
void expect_invalid(S& s, size_t batch, const std::vector<float>& x, const char* label) {
   try {
      s.infer(batch, x.data());
      std::printf("returned_%s 0\n", label);
   } catch (const std::invalid_argument& e) {
      std::printf("threw_%s 0\n", label);
      std::fprintf(stderr, "%s\n", e.what());
   }
}

std::vector<float> read(const char* path, size_t n) {
   std::ifstream f(path);
   std::vector<float> v(n);
   for (auto& x : v) f >> x;
   return v;
}

void print(const char* label, const std::vector<float>& v) {
   std::printf("%s %zu", label, v.size());
   for (float x : v) std::printf(" %.9g", x);
   std::printf("\n");
}

int main(int argc, char** argv) {
   (void)argc;
   const size_t cnn_event = 8 * 8 * 2, mlp_event = 20;
   TMVA_SOFIE_JaxCnn::Session cnn(argv[1], 256);
   TMVA_SOFIE_KerasMlp::Session mlp;             // the default constructor: KerasMlp.dat, default max_batch
   for (size_t n : {1, 7, 256}) {
      std::vector<float> xc = read(argv[2], n * cnn_event), xm = read(argv[3], n * mlp_event);
      print("cnn", cnn.infer(n, xc.data()));
      std::vector<float> out;
      mlp.doInfer(n, xm.data(), out);           // into the caller's vector
      print("mlp", out);
   }
   std::vector<float> big(257 * cnn_event);
   expect_invalid(cnn, 257, big, "cnn_257");
   expect_invalid(cnn, 0, big, "cnn_0");
   std::printf("mlp_max 1 %zu\n", mlp.max_batch());
   return 0;
}
"""


def test_cpp_session_takes_the_batch_per_call_and_refuses_too_large(tmp_path):
    fn, p, feat_c = jax_cnn()
    cnn = j2s.convert(fn, p, np.zeros((4, *feat_c), np.float32), batch="dynamic", name="JaxCnn", max_batch=16)
    model, feat_m = keras_models()[0]
    mlp = j2s.from_keras(model, np.zeros((256, *feat_m), np.float32), batch="dynamic", name="KerasMlp")
    cnn.generate(tmp_path)
    mlp.generate(tmp_path)
    header = (tmp_path / "JaxCnn.hxx").read_text()
    assert 'Session(std::string weight_file = "JaxCnn.dat", size_t max_batch = 16, size_t n_threads = 1)' in header
    assert "infer(size_t batch, const float* tensor_x)" in header
    xs_c = [rng.standard_normal((n, *feat_c)).astype(np.float32) for n in (1, 7, 256)]
    xs_m = [rng.standard_normal((n, *feat_m)).astype(np.float32) for n in (1, 7, 256)]
    _write_floats(tmp_path / "xc.txt", xs_c)
    _write_floats(tmp_path / "xm.txt", xs_m)
    main = tmp_path / "main.cpp"
    main.write_text(CPP_MAIN)
    exe = _build(_cxx(), main, tmp_path / "main", tmp_path)
    # each read() starts at the file's beginning: batch n reads the first n events
    res = _run(exe, tmp_path / "JaxCnn.dat", tmp_path / "xc.txt", tmp_path / "xm.txt", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = _parse(res.stdout)
    flat_c = np.concatenate([x.ravel() for x in xs_c]).reshape(-1, *feat_c)
    flat_m = np.concatenate([x.ravel() for x in xs_m]).reshape(-1, *feat_m)
    for k, n in enumerate((1, 7, 256)):
        assert_close(out["cnn"][k].astype(np.float32).reshape(n, -1), cnn.reference(flat_c[:n]), 1e-4,
                     what=f"C++ cnn batch {n}")
        assert_close(out["mlp"][k].astype(np.float32).reshape(n, -1), mlp.reference(flat_m[:n]), 1e-4,
                     what=f"C++ mlp batch {n}")
    assert "threw_cnn_257" in out and "threw_cnn_0" in out, res.stdout
    assert re.search(r"batch 257 is outside 1\.\.256", res.stderr) and "batch 0 is outside" in res.stderr
    assert out["mlp_max"][0][0] == 256   # the example batch is the default max_batch


# ------------------------------------------------------------------ symbolic shapes, summary
def test_shape_dtype_struct_with_a_symbolic_batch():
    fn, p, feat = jax_mlp()
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 16"), jnp.float32)
    m = j2s.convert(fn, p, spec, max_batch=32)
    assert m.graph.dynamic and m.graph.max_batch == 32
    c = m.compile()
    for n in (1, 5, 32):
        x = rng.standard_normal((n, 16)).astype(np.float32)
        assert_close(c(x), m.reference(x), 1e-4, what=f"batch {n}")


def test_summary_shows_symbolic_shapes_per_event_flops_and_the_arena():
    fn, p, _ = jax_mlp()
    m = j2s.convert(fn, p, np.zeros((8, 16), np.float32), batch="dynamic")
    text = m.summary()
    assert "input  x: (N, 16) float32" in text and "(N, 3)" in text
    per_event = 2 * (16 * 64 + 64 * 32 + 32 * 3) + (64 + 32) * 2   # products; fused biases, relu and tanh
    assert f"({per_event} FLOPs per event" in text, text
    # the arena holds the widest pair of live tensors at max_batch 8, 64-byte aligned, as one allocation
    assert f"at max_batch=8" in text and m.scratch_bytes(8) == memory.arena(m.graph, 8)[1]
    assert m.scratch_bytes(100) > m.scratch_bytes(8)


def test_a_fixed_batch_header_keeps_its_api():
    fn, p, _ = jax_mlp()
    text = j2s.convert(fn, p, np.zeros((2, 16), np.float32)).header()
    assert 'Session(std::string weight_file = "Model.dat")' in text and "max_batch" not in text
    assert "infer(const float* tensor_x)" in text


def test_compiled_refuses_inputs_that_disagree_on_the_batch():
    m = j2s.convert(lambda xs: xs[0] * xs[1], None, (np.zeros((3, 4), np.float32),) * 2, batch="dynamic")
    c = m.compile()
    with pytest.raises(InputError, match="batch N=2"):
        c(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32))
    with pytest.raises(InputError, match="batch of 0"):
        c(np.ones((0, 4), np.float32), np.ones((0, 4), np.float32))
    out = c(np.ones((2, 4), np.float32), np.full((2, 4), 3.0, np.float32))
    np.testing.assert_array_equal(out, np.full((2, 4), 3.0, np.float32))


# ------------------------------------------------------------------------------- errors
def test_folding_the_batch_into_the_features_is_a_clear_error():
    w = np.ones((8 * 16, 3), np.float32)

    def fn(w, x):
        return x.reshape(1, -1) @ w       # the batch becomes part of the features
    with pytest.raises(TraceError, match=r"batch size chosen at run time.*test_dynamic_batch\.py:\d+.*fixed batch"):
        j2s.convert(fn, w, np.zeros((8, 16), np.float32), batch="dynamic")


def test_an_operator_that_needs_a_fixed_batch_names_the_primitive_and_line():
    def fn(x):
        return jnp.sort(x, axis=0) + jnp.cumsum(x, axis=0)   # a sort across the events needs their number
    with pytest.raises(UnsupportedPrimitiveError) as e:
        j2s.convert(fn, None, np.zeros((4, 6), np.float32), batch="dynamic")
    msg = str(e.value)
    assert "sort" in msg and "batch size chosen at run time" in msg and "test_dynamic_batch.py:" in msg, msg
    assert len(e.value.problems) == 1, msg   # the cumulative sum along the batch converts


def test_slicing_reversing_and_padding_along_the_batch():
    def fn(x):
        i = jnp.argmax(x[0]).astype(jnp.int32)
        win = lax.dynamic_slice(x, (i, 0), (x.shape[0], 2))           # the whole batch, a run-time column
        return win * 2.0 + jnp.pad(x[::-1], ((1, 0), (0, 0)))[1:, :2] + jnp.cumsum(x, axis=0)[:, -2:]
    m = j2s.convert(fn, None, np.zeros((4, 6), np.float32), batch="dynamic")
    c = m.compile()
    for n in (1, 5, 9):
        x = rng.standard_normal((n, 6)).astype(np.float32)
        assert_close(c(x), m.reference(x), 1e-5, what=f"batch {n}")


@pytest.mark.parametrize("kwargs, match", [
    ({"batch": "yes"}, "choose"),
    ({"batch": None, "max_batch": 8}, "batch=\"dynamic\""),
    ({"batch": "dynamic", "max_batch": 0}, "positive int"),
])
def test_bad_batch_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        j2s.convert(lambda x: x * 2.0, None, np.zeros((2, 3), np.float32), **kwargs)


def test_a_scalar_input_has_no_batch():
    with pytest.raises(TraceError, match="scalar"):
        j2s.convert(lambda xs: xs[0] * xs[1], None, (np.zeros((2, 3), np.float32), np.zeros((), np.float32)),
                    batch="dynamic")


# ------------------------------------------------------------------------------- ONNX export
@pytest.mark.parametrize("label", list(MODELS))
def test_onnx_export_keeps_the_batch_symbolic(label):
    import onnx
    import onnxruntime as ort
    m, feat = MODELS[label]()
    model = m.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    for v in (*model.graph.input, *model.graph.output):
        assert v.type.tensor_type.shape.dim[0].dim_param == "N", (label, v)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in BATCHES:
        x = rng.standard_normal((n, *feat)).astype(np.float32)
        (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
        assert_close(got, m.reference(x), 1e-4, what=f"{label} in onnxruntime at batch {n}")


# ------------------------------------- the model tests' networks, with a batch chosen at run time
def _tm_models():
    import test_models as tm
    return {"mlp": (tm.mlp, tm._mlp_params, (20,)), "cnn": (tm.cnn, tm._cnn_params, (16, 16, 3)),
            "ds_cnn": (tm.ds_cnn, tm._dsc_params, (12, 12, 3)), "conv1d": (tm.conv1d_net, tm._conv1d_params, (48, 2)),
            "conv3d": (tm.conv3d_net, tm._conv3d_params, (6, 8, 8, 1)),
            "no_params": (tm._standardise_and_score, lambda: None, (7,))}


@pytest.mark.parametrize("label", list(_tm_models()))
def test_model_tests_networks_at_a_run_time_batch_in_cpp_and_onnx(label):
    import onnx
    import onnxruntime as ort
    fn, params, feat = _tm_models()[label]
    m = j2s.convert(fn, params(), np.zeros((3, *feat), np.float32), batch="dynamic", max_batch=40)
    compiled = m.compile()
    model = m.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 7, 40):
        x = rng.standard_normal((n, *feat)).astype(np.float32)
        want = m.reference(x)
        want = list(want) if isinstance(want, tuple) else [want]
        got = compiled(x)
        for k, (g, w) in enumerate(zip(got if isinstance(got, tuple) else [got], want)):
            assert_close(g, w, 1e-4, what=f"{label} C++ output {k} at batch {n}")
        for k, (g, w) in enumerate(zip(sess.run(None, {sess.get_inputs()[0].name: x}), want)):
            assert_close(g, w, 1e-4, what=f"{label} onnxruntime output {k} at batch {n}")


# ------------------------------------------------------------------------------ memory arena
def test_tensors_of_different_dtypes_share_arena_memory():
    from jaxpr2sofie.cpp.emit import retyped

    def f(x):
        t = jnp.sin(x) * 2.0                          # float intermediates die here ...
        c = (t > 0.3).astype(jnp.int32) * 3 + 1       # ... and int ones may take their memory
        return c.astype(jnp.float32) + jnp.cos(x)
    x = rng.standard_normal((16, 8)).astype(np.float32)
    for batch in (None, "dynamic"):
        # unfused: fused, the chain is one loop and nothing of another dtype is left in memory
        m = j2s.convert(f, None, x, batch=batch, disable_passes=["fuse_elementwise"])
        slots, _ = memory.buffer_plan(m.graph)
        assert retyped(m.graph, slots), [[m.graph.tensors[n].dtype for n in s] for s in slots]
        assert "std::atomic_signal_fence" in m.header()
        c = m.compile()
        for n in ((16, 3, 40) if batch else (16,)):
            xs = rng.standard_normal((n, 8)).astype(np.float32)
            assert_close(c(xs), m.reference(xs), 1e-5, what=f"batch={batch} n={n}")


def test_a_reshape_that_fixes_the_batch_is_the_documented_error_not_an_internal_one():
    def fn(x):
        return x.reshape(4, 16, 1) * 2.0        # only a batch of 4 fits: JAX traces it all the same
    with pytest.raises(UnsupportedPrimitiveError) as e:
        j2s.convert(fn, None, np.zeros((4, 16), np.float32), batch="dynamic")
    msg = str(e.value)
    assert "fixes the batch" in msg and "(N, 16) to (4, 16, 1)" in msg and "fixed batch" in msg, msg
    assert "test_dynamic_batch.py:" in msg, msg
    assert "AssertionError" not in msg and "open an issue" not in msg, msg
    m = j2s.convert(fn, None, np.zeros((4, 16), np.float32))          # with a fixed batch it converts
    x = rng.standard_normal((4, 16)).astype(np.float32)
    assert_close(m.compile()(x), m.reference(x), 1e-6)
