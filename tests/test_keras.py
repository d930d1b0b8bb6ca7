"""Keras 3 (JAX backend) -> C++: files trained under TensorFlow, every layer, realistic models, errors.

Expected values come from Keras itself, computed live (`model(x, training=False)`), or, for the
committed fixture files, from TensorFlow when the files were made (tests/fixtures/make_keras_fixtures.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "jax"     # Keras picks its backend at import
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
if keras.backend.backend() != "jax":        # pragma: no cover - only if something imported Keras earlier
    pytest.skip("Keras was imported with another backend before this module", allow_module_level=True)

import jax  # noqa: E402
import jaxpr2sofie as j2s  # noqa: E402
from helpers import assert_close  # noqa: E402

L = keras.layers
FIXTURES = Path(__file__).parent / "fixtures"
ATOL = 1e-4


# -- helpers --------------------------------------------------------------------------------------

def randomise(model, seed=0, kernels=True):
    """Random weights and non-trivial normalisation statistics (a fresh layer's are 0/1, which
    would hide a wrong mean or variance); positive values where Keras needs them."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        if np.dtype(v.dtype).kind != "f":
            continue
        shape, leaf = tuple(v.shape), v.path.rsplit("/", 1)[-1]
        if "variance" in leaf:
            val = rng.uniform(0.5, 2.0, shape)
        elif leaf in ("moving_mean", "mean", "gamma", "beta"):
            val = (1.0 if leaf == "gamma" else 0.0) + 0.3 * rng.standard_normal(shape)
        elif kernels:
            val = 0.5 * rng.standard_normal(shape)
        else:
            continue
        v.assign(val.astype(np.dtype(v.dtype)))
    return model


def flat(tree):
    return [np.asarray(v) for v in keras.tree.flatten(tree)]


def check(model, x, atol=ATOL, name="KerasCase", want=None):
    """from_keras -> compile -> compare with Keras on `x` (or with `want`, e.g. recorded by TensorFlow)."""
    m = j2s.from_keras(model, example_input=x, name=name)
    got = jax.tree_util.tree_leaves(m.compile()(*flat(x)))   # a dict of outputs comes back as a dict
    want = flat(model(x, training=False) if want is None else want)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, atol, what=f"{name} output {k}")
    return m


class In:
    """One model input: shape without the batch, dtype, and the range of integer values."""

    def __init__(self, *shape, dtype="float32", high=10):
        self.shape, self.dtype, self.high = shape, dtype, high

    def sample(self, rng, batch=2):
        if self.dtype.startswith("int"):
            return rng.integers(0, self.high, (batch, *self.shape)).astype(self.dtype)
        return rng.standard_normal((batch, *self.shape)).astype(self.dtype)


def layer_model(layer, specs):
    ins = [keras.Input(s.shape, dtype=s.dtype) for s in specs]
    out = layer(ins if len(ins) > 1 else ins[0])
    return keras.Model(ins if len(ins) > 1 else ins[0], out)


# -- (a) files trained under TensorFlow ------------------------------------------------------------

FIXTURE_MODELS = ["mlp", "cnn", "sequence", "two_heads"]


@pytest.fixture(scope="module")
def recorded():
    return np.load(FIXTURES / "keras_tf_outputs.npz")


@pytest.mark.parametrize("ext", ["keras", "h5"])
@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_tensorflow_trained_file(name, ext, recorded):
    """A file trained and saved under TensorFlow (>= 2.18, NumPy 2) converts under JAX with no
    TensorFlow installed, and the C++ reproduces TensorFlow's outputs event by event."""
    m = j2s.from_keras(FIXTURES / f"keras_{name}.{ext}")     # example input from model.inputs: batch 1
    compiled = m.compile()
    xs = [recorded[k] for k in sorted(recorded.files) if k.startswith(f"{name}/x")]   # flat order: sorted keys
    ys = [recorded[k] for k in sorted(recorded.files) if k.startswith(f"{name}/y_")]
    assert [s for s, _ in m.traced.input_avals] == [(1, *x.shape[1:]) for x in xs]
    for i in range(len(xs[0])):
        got = compiled(*[x[i:i + 1] for x in xs])
        got = jax.tree_util.tree_leaves(got)
        for k, (g, y) in enumerate(zip(got, ys)):
            assert_close(g, y[i:i + 1], ATOL, what=f"{name}.{ext} event {i} output {k}")
    assert tuple(int(v) for v in str(recorded["tensorflow_version"]).split(".")[:2]) >= (2, 18)


def test_weights_named_by_keras_variable_path():
    m = j2s.from_keras(FIXTURES / "keras_mlp.keras")
    labels = {t.label for t in m.graph.weights()}
    assert {"dense/kernel", "dense/bias", "dense_3/kernel"} <= labels, labels


# -- (b) one small model per layer -----------------------------------------------------------------

ACTIVATIONS = ["relu", "relu6", "sigmoid", "hard_sigmoid", "softmax", "softplus", "softsign", "tanh", "selu",
               "elu", "exponential", "swish", "silu", "gelu", "leaky_relu", "mish", "log_softmax", "linear"]
CF = dict(data_format="channels_first")

LAYERS = [
    ("dense_no_bias_rank3", lambda: L.Dense(4, use_bias=False), [In(3, 5)]),
    # convolutions
    ("conv1d_valid_stride2", lambda: L.Conv1D(4, 3, strides=2), [In(9, 3)]),
    ("conv1d_causal_dilated", lambda: L.Conv1D(4, 3, dilation_rate=2, padding="causal"), [In(10, 3)]),
    ("conv1d_channels_first_same", lambda: L.Conv1D(4, 3, padding="same", **CF), [In(3, 9)]),
    ("conv1d_groups", lambda: L.Conv1D(4, 3, groups=2, activation="relu"), [In(8, 4)]),
    ("conv2d_same", lambda: L.Conv2D(4, 3, padding="same"), [In(6, 6, 3)]),
    ("conv2d_valid_stride2", lambda: L.Conv2D(4, 3, strides=2), [In(7, 7, 2)]),
    ("conv2d_dilated_same", lambda: L.Conv2D(3, 3, dilation_rate=2, padding="same"), [In(7, 7, 2)]),
    ("conv2d_channels_first", lambda: L.Conv2D(4, (3, 2), strides=(2, 1), padding="same", **CF), [In(3, 6, 5)]),
    ("conv2d_groups", lambda: L.Conv2D(6, 3, groups=3, padding="same"), [In(5, 5, 6)]),
    ("conv2d_groups_channels_first", lambda: L.Conv2D(4, 3, groups=2, **CF), [In(4, 5, 5)]),
    ("conv3d_same", lambda: L.Conv3D(3, 2, padding="same"), [In(4, 4, 4, 2)]),
    ("conv3d_channels_first_stride2", lambda: L.Conv3D(3, 3, strides=2, **CF), [In(2, 5, 5, 5)]),
    ("depthwise_conv2d", lambda: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), [In(6, 6, 3)]),
    ("depthwise_conv2d_channels_first_stride2", lambda: L.DepthwiseConv2D(3, strides=2, **CF), [In(3, 7, 7)]),
    ("separable_conv2d", lambda: L.SeparableConv2D(4, 3, padding="same", activation="relu"), [In(6, 6, 3)]),
    ("conv2d_transpose_same_stride2", lambda: L.Conv2DTranspose(3, 3, strides=2, padding="same"), [In(4, 4, 2)]),
    ("conv2d_transpose_valid", lambda: L.Conv2DTranspose(3, (3, 2), strides=(2, 1)), [In(4, 3, 2)]),
    ("conv2d_transpose_channels_first", lambda: L.Conv2DTranspose(2, 2, strides=2, **CF), [In(3, 3, 4)]),
    ("conv3d_transpose", lambda: L.Conv3DTranspose(2, 2, strides=2), [In(2, 2, 2, 2)]),
    ("conv1d_transpose", lambda: L.Conv1DTranspose(3, 3, strides=2, padding="same"), [In(5, 2)]),
    # pooling
    ("max_pool1d", lambda: L.MaxPooling1D(2), [In(8, 3)]),
    ("avg_pool1d_same_stride2", lambda: L.AveragePooling1D(3, strides=2, padding="same"), [In(9, 3)]),
    ("max_pool2d", lambda: L.MaxPooling2D(2), [In(6, 6, 3)]),
    ("max_pool2d_same_stride2", lambda: L.MaxPooling2D(3, strides=2, padding="same"), [In(7, 7, 2)]),
    ("max_pool2d_channels_first", lambda: L.MaxPooling2D(2, **CF), [In(3, 6, 6)]),
    ("avg_pool2d", lambda: L.AveragePooling2D(2), [In(6, 6, 3)]),
    ("avg_pool2d_same_stride2", lambda: L.AveragePooling2D(3, strides=2, padding="same"), [In(7, 7, 2)]),
    ("max_pool3d", lambda: L.MaxPooling3D(2), [In(4, 4, 4, 2)]),
    ("avg_pool3d_same", lambda: L.AveragePooling3D(2, padding="same"), [In(3, 5, 4, 2)]),
    ("global_avg_pool1d", lambda: L.GlobalAveragePooling1D(), [In(7, 3)]),
    ("global_max_pool1d", lambda: L.GlobalMaxPooling1D(), [In(7, 3)]),
    ("global_avg_pool2d", lambda: L.GlobalAveragePooling2D(), [In(4, 5, 3)]),
    ("global_max_pool2d_channels_first_keepdims", lambda: L.GlobalMaxPooling2D(keepdims=True, **CF), [In(3, 4, 5)]),
    ("global_avg_pool3d", lambda: L.GlobalAveragePooling3D(), [In(3, 3, 3, 2)]),
    ("global_max_pool3d", lambda: L.GlobalMaxPooling3D(), [In(3, 3, 3, 2)]),
    # normalisation
    ("batch_norm", lambda: L.BatchNormalization(), [In(5)]),
    ("batch_norm_conv_channels_first", lambda: L.BatchNormalization(axis=1), [In(3, 4, 4)]),
    ("batch_norm_no_center_scale", lambda: L.BatchNormalization(center=False, scale=False, epsilon=0.01), [In(4, 3)]),
    ("layer_norm", lambda: L.LayerNormalization(), [In(6)]),
    ("layer_norm_two_axes", lambda: L.LayerNormalization(axis=(1, 2)), [In(3, 4, 5)]),
    ("rms_norm", lambda: L.RMSNormalization(), [In(3, 8)]),
    ("unit_norm", lambda: L.UnitNormalization(), [In(5)]),
    ("group_norm", lambda: L.GroupNormalization(groups=2), [In(4, 4, 6)]),
    ("group_norm_instance", lambda: L.GroupNormalization(groups=-1), [In(5, 3)]),
    # identity and data movement
    ("dropout", lambda: L.Dropout(0.5), [In(6)]),
    ("flatten", lambda: L.Flatten(), [In(3, 4, 2)]),
    ("reshape", lambda: L.Reshape((4, -1)), [In(3, 8)]),
    ("permute_2d", lambda: L.Permute((2, 1)), [In(3, 5)]),
    ("permute_3d", lambda: L.Permute((3, 1, 2)), [In(2, 3, 4)]),
    ("repeat_vector", lambda: L.RepeatVector(3), [In(5)]),
    ("upsampling2d", lambda: L.UpSampling2D(2), [In(3, 3, 2)]),
    ("upsampling2d_channels_first", lambda: L.UpSampling2D((2, 3), **CF), [In(2, 3, 2)]),
    ("upsampling2d_bilinear", lambda: L.UpSampling2D(2, interpolation="bilinear"), [In(3, 4, 2)]),
    ("upsampling1d", lambda: L.UpSampling1D(3), [In(4, 2)]),
    ("zero_padding2d", lambda: L.ZeroPadding2D(((1, 2), (0, 1))), [In(3, 3, 2)]),
    ("zero_padding1d", lambda: L.ZeroPadding1D(2), [In(4, 3)]),
    ("cropping2d", lambda: L.Cropping2D(((1, 0), (1, 2))), [In(5, 6, 2)]),
    ("cropping1d", lambda: L.Cropping1D((1, 2)), [In(6, 3)]),
    # merging
    ("concatenate", lambda: L.Concatenate(), [In(5), In(3)]),
    ("concatenate_axis1", lambda: L.Concatenate(axis=1), [In(2, 4), In(3, 4)]),
    ("add", lambda: L.Add(), [In(5), In(5), In(5)]),
    ("subtract", lambda: L.Subtract(), [In(3, 4), In(3, 4)]),
    ("multiply", lambda: L.Multiply(), [In(5), In(5)]),
    ("average", lambda: L.Average(), [In(5), In(5)]),
    ("maximum", lambda: L.Maximum(), [In(4, 2), In(4, 2)]),
    ("minimum", lambda: L.Minimum(), [In(5), In(5)]),
    ("dot", lambda: L.Dot(axes=1), [In(5), In(5)]),
    ("dot_rank3_normalize", lambda: L.Dot(axes=(2, 2), normalize=True), [In(3, 4), In(2, 4)]),
    # activation layers
    ("relu_layer_clipped_leaky_threshold", lambda: L.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.2), [In(5)]),
    ("prelu", lambda: L.PReLU(), [In(5)]),
    ("softmax_layer_axis1", lambda: L.Softmax(axis=1), [In(3, 4)]),
    # recurrent and attention layers (lax.scan over time: one C++ loop, any sequence length)
    ("lstm", lambda: L.LSTM(5), [In(6, 3)]),
    ("lstm_1000_steps", lambda: L.LSTM(5), [In(1000, 3)]),
    ("gru_backwards_reset_before", lambda: L.GRU(4, go_backwards=True, reset_after=False), [In(7, 3)]),
    ("gru_sequences", lambda: L.GRU(4, return_sequences=True), [In(5, 3)]),
    ("simple_rnn", lambda: L.SimpleRNN(4), [In(6, 3)]),
    ("bidirectional_gru", lambda: L.Bidirectional(L.GRU(3, return_sequences=True)), [In(5, 2)]),
    ("time_distributed", lambda: L.TimeDistributed(L.Dense(3)), [In(4, 5)]),
    ("multi_head_self_attention", lambda: lambda t: L.MultiHeadAttention(2, 3)(t, t), [In(4, 6)]),
    ("attention", lambda: L.Attention(), [In(3, 4), In(5, 4)]),
    # lookups and preprocessing
    ("embedding", lambda: L.Embedding(10, 3), [In(4, dtype="int32", high=10)]),
    ("rescaling", lambda: L.Rescaling(1 / 127.5, offset=-1.0), [In(4, 3)]),
    ("normalization_given_stats", lambda: L.Normalization(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 1.0]),
     [In(2, 3)]),
    ("normalization", lambda: L.Normalization(axis=-1), [In(3)]),
]


@pytest.mark.parametrize("factory, specs", [pytest.param(f, s, id=n) for n, f, s in LAYERS])
def test_layer_matches_keras(factory, specs):
    rng = np.random.default_rng(7)
    model = randomise(layer_model(factory(), specs))
    xs = [s.sample(rng) for s in specs]
    check(model, xs if len(xs) > 1 else xs[0])


def test_dense_with_every_activation():
    """One Dense per Keras activation, side by side in one model (one C++ build for all of them)."""
    x_in = keras.Input((6,))
    outs = {a: L.Dense(5, activation=a, name=f"dense_{a}")(x_in) for a in ACTIVATIONS}
    model = randomise(keras.Model(x_in, outs))
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32) * 2
    m = j2s.from_keras(model, example_input=x, name="Activations")
    got = m.compile()(x)            # dict outputs come back as the model's dict
    want = model(x, training=False)
    for a in ACTIVATIONS:
        assert_close(got[a], np.asarray(want[a]), ATOL, what=f"Dense(activation={a!r})")


# -- (c) realistic models ------------------------------------------------------------------------

@pytest.mark.slow   # model zoo: in .ci/run's slow set
def test_mobilenet_v2():
    """keras.applications.MobileNetV2 (random weights, non-trivial BatchNorm statistics), logits."""
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classifier_activation=None)
    randomise(model, kernels=False)
    x = np.random.default_rng(0).standard_normal((1, 96, 96, 3)).astype(np.float32)
    m = check(model, x, name="MobileNetV2")
    assert m.parameter_count() > 3_000_000


def two_inputs_two_outputs():
    jets, tracks = keras.Input((8,), name="jets"), keras.Input((5, 4), name="constituents")
    t = L.Conv1D(6, 3, padding="same", activation="relu")(tracks)
    t = L.GlobalAveragePooling1D()(t)
    h = L.Concatenate()([L.Dense(8, activation="gelu")(jets), t])
    h = L.BatchNormalization()(L.Dense(12, activation="swish")(h))
    return keras.Model([jets, tracks], {"flavour": L.Dense(3, activation="softmax")(h),
                                        "energy": L.Dense(1, activation="softplus")(h)})


def test_functional_two_inputs_two_outputs():
    model = randomise(two_inputs_two_outputs(), seed=4)
    rng = np.random.default_rng(4)
    x = [rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((3, 5, 4)).astype(np.float32)]
    check(model, x, name="TwoHeads")
    # without example_input: shapes and dtypes from model.inputs, batch 1, in the model's input
    # order (not sorted by name) and named after the keras.Input layers
    m = j2s.from_keras(model)
    assert [s for s, _ in m.traced.input_avals] == [(1, 8), (1, 5, 4)]
    assert m.traced.input_labels == ["jets", "constituents"]
    assert "const float* tensor_jets, const float* tensor_constituents" in m.header()
    got = m.compile()(x[0][:1], x[1][:1])
    want = model([x[0][:1], x[1][:1]], training=False)
    assert set(got) == {"energy", "flavour"}            # a dict of outputs comes back as that dict
    assert_close(got["energy"], np.asarray(want["energy"]), ATOL)
    assert_close(got["flavour"], np.asarray(want["flavour"]), ATOL)
    assert m.graph.outputs == ["energy", "flavour"]


def test_integer_input_inferred_from_spec():
    tokens = keras.Input((6,), dtype="int32")
    e = L.Embedding(20, 4)(tokens)
    model = randomise(keras.Model(tokens, L.Dense(2)(L.GlobalAveragePooling1D()(e))))
    m = j2s.from_keras(model)
    assert m.traced.input_avals == [((1, 6), np.dtype("int32"))]
    x = np.array([[0, 3, 19, 7, 7, 1]], np.int32)
    assert_close(m.compile()(x), np.asarray(model(x)), ATOL)


class Residual(keras.Model):
    """A subclassed model whose call takes `training`."""

    def __init__(self):
        super().__init__()
        self.inner = L.Dense(6, activation="tanh")
        self.norm = L.BatchNormalization()
        self.drop = L.Dropout(0.5)
        self.head = L.Dense(2)

    def call(self, x, training=False):
        return self.head(self.drop(self.norm(x + self.inner(x), training=training), training=training))


class TwoCalls(keras.Model):
    """A subclassed model whose call has no `training` argument, returning a tuple."""

    def __init__(self):
        super().__init__()
        self.a, self.b = L.Dense(3), L.Dense(4, activation="relu")

    def call(self, x):
        return self.a(x), self.b(x)


@pytest.mark.parametrize("cls", [Residual, TwoCalls])
def test_subclassed_model(cls):
    x = np.random.default_rng(5).standard_normal((2, 6)).astype(np.float32)
    model = cls()
    with pytest.raises(ValueError, match="example_input"):
        j2s.from_keras(model)             # no declared inputs
    model(x)
    check(randomise(model), x, name=cls.__name__)


def test_sequential_without_input_layer():
    model = keras.Sequential([L.Dense(4, activation="elu"), L.Dense(2)])
    model.build((None, 3))
    randomise(model)
    x = np.random.default_rng(6).standard_normal((1, 3)).astype(np.float32)
    m = j2s.from_keras(model)
    assert_close(m.compile()(x), np.asarray(model(x)), ATOL)


def test_example_script(tmp_path, monkeypatch, capsys):
    import runpy
    monkeypatch.setattr(sys, "argv", ["keras_example.py", str(tmp_path)])
    runpy.run_path(str(Path(__file__).parents[1] / "examples" / "keras_example.py"), run_name="__main__")
    assert {p.name for p in tmp_path.iterdir()} == {"KerasTagger.hxx", "KerasTagger.dat", "keras_cnn.hxx",
                                                    "keras_cnn.dat"}
    assert "max |C++ - TensorFlow" in capsys.readouterr().out


# -- (d), (e) errors -----------------------------------------------------------------------------

def test_other_backend_gives_clear_error():
    """Keras imported with another backend first (here numpy, which ships with Keras): the error says
    to set KERAS_BACKEND=jax before importing Keras."""
    script = textwrap.dedent(f"""
        import keras, jaxpr2sofie as j2s
        assert keras.backend.backend() == "numpy"
        in_memory = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        for what in (in_memory, {str(FIXTURES / "keras_mlp.keras")!r}):
            try:
                j2s.from_keras(what)
            except j2s.KerasBackendError as e:
                print("ERROR:", e)
    """)
    env = dict(os.environ, KERAS_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    errors = [line for line in out.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 2, out.stdout
    for e in errors:
        assert "'numpy' backend" in e and "KERAS_BACKEND=jax" in e and "before importing Keras" in e


class ErfInvLayer(L.Layer):
    def call(self, x):
        return keras.ops.erfinv(x * 0.1)           # erf_inv has no conversion rule


def test_unsupported_primitive_names_primitive_and_layer_line():
    x_in = keras.Input((5,))
    model = keras.Model(x_in, L.Dense(3)(ErfInvLayer()(L.Dense(5)(x_in))))
    with pytest.raises(j2s.UnsupportedPrimitiveError) as err:
        j2s.from_keras(model)
    assert err.value.primitives == ["erf_inv"]
    line = ErfInvLayer.call.__code__.co_firstlineno + 1
    assert f"test_keras.py:{line}" in str(err.value) and "ErfInvLayer.call" in str(err.value), str(err.value)


def test_bad_inputs():
    with pytest.raises(FileNotFoundError, match="no_such_model.keras"):
        j2s.from_keras(FIXTURES / "no_such_model.keras")
    with pytest.raises(j2s.ModelFileError, match=r"keras_tf_outputs\.npz: expected a Keras 3 `\.keras` file"):
        j2s.from_keras(FIXTURES / "keras_tf_outputs.npz")
    with pytest.raises(TypeError, match="Keras 3 model"):
        j2s.from_keras(object())
    seq = keras.Input((None, 3))
    with pytest.raises(ValueError, match="free dimension"):
        j2s.from_keras(keras.Model(seq, L.GlobalMaxPooling1D()(seq)))


# -- (f) damaged or mislabelled model files: the file, the problem and the fix in one message -----------

def _half(name):
    data = (FIXTURES / name).read_bytes()
    return data[:len(data) // 2]


def _weights_only(path):
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    model.save_weights(path)          # Keras insists on a .weights.h5 name here
    return path.read_bytes()


# (file name, its bytes, what the message must say is wrong, what it must say to do)
BAD_FILES = [
    ("truncated.keras", lambda tmp: _half("keras_mlp.keras"), "truncated or damaged zip archive",
     "model.save('model.keras')"),
    ("empty.keras", lambda tmp: b"", "empty (0 bytes)", "model.save('model.keras')"),
    ("notes.keras", lambda tmp: b"just some text\n", "not a Keras model: a .keras file is a zip archive",
     "model.save('model.keras')"),
    ("legacy.keras", lambda tmp: (FIXTURES / "keras_mlp.h5").read_bytes(), "legacy HDF5 (.h5) model with a .keras name",
     "rename it to .h5"),
    ("arrays.keras", lambda tmp: (FIXTURES / "keras_tf_outputs.npz").read_bytes(),
     "zip archive but not a Keras model (it holds no config.json)", "model.save('model.keras')"),
    ("notes.h5", lambda tmp: b"just some text\n", "not an HDF5 file", "model.save('model.keras')"),
    ("new_format.h5", lambda tmp: (FIXTURES / "keras_mlp.keras").read_bytes(),
     "Keras 3 zip archive (.keras format) with an .h5 name", "rename it to .keras"),
    ("truncated.h5", lambda tmp: _half("keras_mlp.h5"), "truncated file", "model.save('model.keras')"),
    ("weights.h5", lambda tmp: _weights_only(tmp / "w.weights.h5"), "holds weights only",
     "model.load_weights"),
    ("lfs.keras", lambda tmp: b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 57189\n",
     "Git LFS pointer", "git lfs pull"),
]


@pytest.mark.parametrize("name, content, problem, fix", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_damaged_or_mislabelled_file(tmp_path, name, content, problem, fix):
    path = tmp_path / name
    path.write_bytes(content(tmp_path))
    with pytest.raises(j2s.ModelFileError) as err:
        j2s.from_keras(path)
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert problem in message and fix in message, message


def test_keras_function_is_what_from_keras_converts():
    """The CLI's `inspect` and `bench` get the function itself from the bridge; it is the one converted."""
    from jaxpr2sofie.keras_bridge import keras_function
    kf = keras_function(FIXTURES / "keras_mlp.keras")
    assert kf.name == "keras_mlp"
    m = j2s.from_keras(FIXTURES / "keras_mlp.keras")
    assert m.name == "keras_mlp"
    x = np.random.default_rng(2).standard_normal(m.traced.input_avals[0][0]).astype(np.float32)
    assert_close(np.asarray(kf.fn(kf.params, {k: x for k in kf.example_input})), m.reference(x), 1e-6)


# -- one set of options, output names, every problem listed ---------------------------------------------

class FftLayer(L.Layer):
    def call(self, x):
        real, imag = keras.ops.fft((x, keras.ops.zeros_like(x)))
        return real + imag


def test_list_outputs_keep_their_keras_names_and_options_are_those_of_convert():
    x_in = keras.Input((6,), name="x")
    h = L.Dense(5, activation="tanh")(x_in)
    model = randomise(keras.Model(x_in, [L.Add(name="o1")([h, h]), L.Add(name="o2")([h, L.Dense(5)(h)])]), seed=3)
    x = np.random.default_rng(3).standard_normal((1, 6)).astype(np.float32)
    m = j2s.from_keras(model, progress=False, disable_passes=("fuse_elementwise",), blas="none")
    assert m.graph.outputs == ["o1", "o2"], m.graph.outputs
    assert "tensor_o1" in m.header() and "tensor_o2" in m.header()
    got, want = m.compile()(x), model(x, training=False)
    for g, w in zip(got, want):
        assert_close(g, np.asarray(w), ATOL)
    assert j2s.from_keras(model, output_names=["a", "b"]).graph.outputs == ["a", "b"]
    with pytest.raises(TypeError, match=r"from_keras\(\) got unknown keyword argument\(s\) 'training'.*call_kwargs="):
        j2s.from_keras(model, training=False)


def test_call_kwargs_reach_the_model_call():
    class Scaled(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(3)

        def call(self, x, training=None, scale=1.0):
            return self.dense(x) * scale
    model = Scaled()
    x = np.random.default_rng(5).standard_normal((2, 4)).astype(np.float32)
    model(x)
    m = j2s.from_keras(model, example_input=x, call_kwargs={"scale": 3.0})
    assert_close(m.compile()(x), np.asarray(model(x, scale=3.0)), ATOL)


def test_a_layer_using_keras_ops_fft_lists_fft_with_its_line():
    model = keras.Sequential([keras.Input((8,)), FftLayer()])
    with pytest.raises(j2s.UnsupportedPrimitiveError) as err:
        j2s.from_keras(model)
    where = {prim: line for prim, _, line in err.value.problems}
    assert {"complex", "fft", "real", "imag"} <= set(where), str(err.value)
    assert "test_keras.py:" in where["fft"], where
    assert "FftLayer.call" in where["fft"], where
