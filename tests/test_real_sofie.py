"""Real SOFIE (the `sofie` package from PyPI) as a backend and a test oracle.

Each model is handed to SOFIE by the ONNX route (`to_rmodel(route="onnx")`: SOFIE's ONNX parser reading
the project's export; the operators route has its own tests in test_sofie_operators.py),
SOFIE generates its own header, g++ compiles it under AddressSanitizer and UndefinedBehaviorSanitizer
(as SOFIE's own tests do), and its outputs must match JAX; at a run-time batch at 1, 7 and the
Session's maximum. SOFIE is a dependency of the test extra: a missing package fails, not skips.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import pytest
from jax import lax

import jaxpr2sofie as j2s
from jaxpr2sofie.errors import BuildError

import test_keras as tk
import test_layout as tl
import test_models as tm
from helpers import compare_with_jax

import sofie  # noqa: E402  (a dependency of the test extra: a missing package fails, it does not skip)

keras = tk.keras


def _check_with_sofie(m, *inputs, atol=1e-4, sanitize=True, route="onnx"):
    c = m.compile_sofie(sanitize=sanitize, route=route)
    for x in inputs:
        flat = m.flat_inputs(x)
        got = c(*flat)
        got = list(got) if isinstance(got, tuple) else [got]
        compare_with_jax(m.traced, flat, got, atol, name=f"{m.name} through SOFIE")
    return c


def _sofie_export_runs_in_onnxruntime(m, x, atol=1e-4):
    """The export for SOFIE is standard ONNX too: onnxruntime runs it and matches JAX."""
    sess = ort.InferenceSession(m.to_onnx(target="sofie").SerializeToString(), providers=["CPUExecutionProvider"])
    flat = m.flat_inputs(x)
    got = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], flat)))
    compare_with_jax(m.traced, flat, got, atol, name=f"{m.name} for SOFIE in onnxruntime")


def _nodes(m, target="onnx"):
    return list(m.to_onnx(target=target).graph.node)


def _attr(node, name):
    import onnx
    return next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name)


MODELS = {
    "mlp": (tm.mlp, tm._mlp_params, (10, 4, 20)),
    "cnn_nhwc": (tm.cnn, tm._cnn_params, (2, 2, 16, 16, 3)),
    "depthwise_separable_cnn": (tm.ds_cnn, tm._dsc_params, (3, 2, 12, 12, 3)),
    "conv1d": (tm.conv1d_net, tm._conv1d_params, (5, 3, 48, 2)),
    "no_params": (tm._standardise_and_score, lambda: None, (11, 3, 7)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_through_real_sofie(name):
    fn, params, (seed, *shape) = MODELS[name]
    x, *more = tm._inputs(seed, *shape)
    m = j2s.convert(fn, params(), x, name=name.title().replace("_", ""), progress=False)
    _check_with_sofie(m, x, *more)


def test_several_inputs_and_outputs_through_real_sofie():
    rng = np.random.default_rng(4)
    inputs = {"jets": rng.standard_normal((3, 4)).astype(np.float32),
              "leptons": rng.standard_normal((3, 3)).astype(np.float32)}
    m = j2s.convert(tm.two_tower, tm._multi_params(), inputs, name="TwoTower", progress=False)
    _check_with_sofie(m, inputs)


def test_run_time_batch_through_real_sofie_at_1_7_and_max():
    """SOFIE's Session(file, N) and doInfer(N, ...): batches 1, 7 and the maximum the Session was
    built for (a larger batch builds a new Session, as our own header's callable does)."""
    params = tm._mlp_params()
    x = tm._inputs(10, 4, 20)[0]
    m = j2s.convert(tm.mlp, params, x, name="MlpN", batch="dynamic", max_batch=32, progress=False)
    rng = np.random.default_rng(5)
    _check_with_sofie(m, *[rng.standard_normal((n, 20)).astype(np.float32) for n in (1, 7, 32)])


def test_to_rmodel_is_sofies_own_model(tmp_path):
    m = j2s.convert(tm.mlp, tm._mlp_params(), tm._inputs(10, 1, 20)[0], name="Mlp", progress=False)
    rm = m.to_rmodel()
    assert isinstance(rm, sofie.RModel)
    assert list(rm.get_input_tensor_names()) == list(m.graph.inputs)
    assert list(rm.get_output_tensor_names()) == list(m.graph.outputs)
    rm.generate()
    rm.output_generated(str(tmp_path / "Mlp.hxx"))
    assert "namespace SOFIE_Mlp" in (tmp_path / "Mlp.hxx").read_text()


def test_generate_with_the_sofie_backend_writes_sofies_header(tmp_path):
    """backend="sofie" writes SOFIE's header unmodified, with SOFIE's weight-file options."""
    m = j2s.convert(lambda p, x: jax.nn.softmax(x @ p), np.ones((4, 3), np.float32), np.ones((1, 4), np.float32),
                    name="Small", progress=False)
    hxx, dat = m.generate(tmp_path / "text", backend="sofie")
    assert "Code generated automatically by SOFIE" in hxx.read_text() and dat.exists()
    hxx, dat = m.generate(tmp_path / "st", backend="sofie", weights="safetensors")
    assert dat.suffix == ".safetensors" and dat.exists()
    hxx, dat = m.generate(tmp_path / "none", backend="sofie", weights="none", session=False)
    assert dat is None and "struct Session" not in hxx.read_text()
    with pytest.raises(ValueError, match="weights='binary' with backend='sofie': choose one of text, safetensors"):
        m.generate(tmp_path / "bad", backend="sofie", weights="binary")
    with pytest.raises(ValueError, match="session=False .* needs weights='none'"):
        m.generate(tmp_path / "bad", backend="sofie", session=False)


def test_auto_backend_prefers_sofie_when_it_parses_every_operator(tmp_path):
    m = j2s.convert(lambda p, x: jnp.tanh(x @ p), np.ones((4, 3), np.float32), np.ones((1, 4), np.float32),
                    name="Auto", progress=False)
    hxx, _ = m.generate(tmp_path, backend="auto")
    assert "namespace SOFIE_Auto" in hxx.read_text()
    hxx, _ = m.generate(tmp_path / "binary", backend="auto", weights="binary")   # a format only ours has
    assert "Code generated by jaxpr2sofie" in hxx.read_text()


# -- SOFIE's traps: a minimal reproducer each, run through real SOFIE (jaxpr2sofie.onnx.SOFIE_TRAPS) ----

_rng = np.random.default_rng(23)


def _f32(*shape):
    return _rng.standard_normal(shape).astype(np.float32)


def test_trap_asymmetric_conv_padding_is_an_explicit_pad():
    """SOFIE's Conv averages asymmetric pads: the export pads explicitly, Conv keeps the symmetric rest."""
    fn = lambda k, x: lax.conv_general_dilated(x, k, (1, 1), ((1, 2), (1, 1)),   # noqa: E731
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
    m = j2s.convert(fn, _f32(3, 3, 2, 4), _f32(2, 6, 5, 2), name="AsymPad", progress=False)
    (conv,) = [n for n in _nodes(m, "sofie") if n.op_type == "Conv"]
    assert _attr(conv, "pads") == [0, 1, 0, 1] and "Pad" in [n.op_type for n in _nodes(m, "sofie")]
    _check_with_sofie(m, _f32(2, 6, 5, 2))


def test_trap_gemm_without_bias_has_no_c_input():
    """SOFIE's parser refuses a Gemm whose C is a scalar zero: a product without bias has no C at all."""
    m = j2s.convert(lambda w, x: lax.dot_general(x, w, (((1,), (1,)), ((), ()))), _f32(3, 5), _f32(4, 5),
                    name="GemmNoBias", progress=False)
    (gemm,) = [n for n in _nodes(m, "sofie") if n.op_type == "Gemm"]
    assert len(gemm.input) == 2
    _check_with_sofie(m, _f32(4, 5))


def test_trap_gemm_with_a_1d_bias_at_a_run_time_batch():
    """Built by hand, SOFIE's Gemm with a Dim batch and a 1-D bias asserts N*k == k; its ONNX parser
    broadcasts the bias itself: batches 1, 7 and max match."""
    p = {"w": _f32(5, 3), "b": _f32(3)}
    m = j2s.convert(lambda p, x: x @ p["w"] + p["b"], p, _f32(2, 5), name="GemmBiasN", batch="dynamic",
                    max_batch=16, progress=False)
    (gemm,) = [n for n in _nodes(m, "sofie") if n.op_type == "Gemm"]
    assert len(gemm.input) == 3
    _check_with_sofie(m, *[_f32(n, 5) for n in (1, 7, 16)])


def test_trap_dilated_conv_kernel_written_out():
    """SOFIE dilates a Conv kernel into a work buffer and never zeroes its holes: wrong numbers as
    soon as its memory pool hands that buffer over from an earlier operator (a causal Conv1D's Pad
    here). For SOFIE the kernel is dilated at export (dilations=1); other runtimes keep `dilations`."""
    fn = lambda k, x: lax.conv_general_dilated(x, k, (1,), ((4, 0),), rhs_dilation=(2,),   # noqa: E731
                                               dimension_numbers=("NWC", "WIO", "NWC"))
    m = j2s.convert(fn, _f32(3, 3, 4), _f32(2, 10, 3), name="DilatedConv", progress=False)
    (plain,) = [n for n in _nodes(m) if n.op_type == "Conv"]
    (for_sofie,) = [n for n in _nodes(m, "sofie") if n.op_type == "Conv"]
    assert _attr(plain, "dilations") == [2] and _attr(for_sofie, "dilations") == [1]
    assert _attr(for_sofie, "kernel_shape") == [5]
    x = _f32(2, 10, 3)
    _check_with_sofie(m, x)
    _sofie_export_runs_in_onnxruntime(m, x)


def test_trap_strided_slice_span_is_a_multiple_of_its_step():
    """SOFIE's Slice sizes its output floor((end - start) / step) and writes ceil of it (a heap
    overflow under ASan): for SOFIE each span is made a multiple of its step, zero-padded past the end.
    Here a plain strided slice and a transposed convolution with a window stride (cropped, then strided)
    and a kernel dilation: SOFIE's ConvTranspose is wrong with dilations, so for SOFIE the kernel is
    dilated at export."""
    def fn(k, x):
        y = lax.conv_general_dilated(x, k, (2, 1), [(3, 1), (0, 2)], lhs_dilation=(2, 2), rhs_dilation=(1, 2),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y[:, 1:10:3].sum(axis=(1, 2)), x[:, ::2, 1:5:3].reshape(2, -1)
    x = _f32(2, 5, 5, 3)
    m = j2s.convert(fn, _f32(3, 3, 3, 4), x, name="StridedSlices", progress=False)
    pads = [[n.op_type for n in _nodes(m, target)].count("Pad") for target in ("onnx", "sofie")]
    assert pads[1] > pads[0], pads
    (convt,) = [n for n in _nodes(m, "sofie") if n.op_type == "ConvTranspose"]
    assert _attr(convt, "dilations") == [1, 1] and _attr(convt, "kernel_shape") == [3, 5]
    _check_with_sofie(m, x)
    _sofie_export_runs_in_onnxruntime(m, x)


def _keras_model(*layers, shape=(7, 3), seed=0):
    """One input, an output per layer (one SOFIE build for all of them)."""
    inp = keras.Input(shape)
    outs = [layer(inp) for layer in layers]
    return tk.randomise(keras.Model(inp, outs if len(outs) > 1 else outs[0]), seed=seed)


def test_trap_reverse_recurrent_nodes_run_forward_over_the_reversed_sequence():
    """SOFIE rejects the ONNX direction "reverse" (LSTM and RNN: "Invalid LSTM direction"): for it,
    a forward node reads the sequence reversed by a Slice and its Y is reversed back."""
    L = keras.layers
    model = _keras_model(L.LSTM(4, go_backwards=True), L.SimpleRNN(3, go_backwards=True, return_sequences=True))
    x = _f32(2, 7, 3)
    m = j2s.from_keras(model, example_input=x, name="Reverse")
    assert {_attr(n, "direction") for n in _nodes(m) if n.op_type in ("LSTM", "RNN")} == {b"reverse"}
    assert {_attr(n, "direction") for n in _nodes(m, "sofie") if n.op_type in ("LSTM", "RNN")} == {b"forward"}
    _check_with_sofie(m, x)
    _sofie_export_runs_in_onnxruntime(m, x)


def test_trap_where_on_int32_is_chosen_in_int64():
    """SOFIE's Where refuses int32 values ("does not yet support input type 6"), which a lookup's
    negative-index wrap uses (Keras Embedding): for SOFIE the choice is made in int64."""
    m = j2s.convert(lambda table, i: table[i], _f32(10, 3), np.array([0, -1, 9, -10], np.int32), name="Lookup",
                    progress=False)
    wheres = [n for n in _nodes(m, "sofie") if n.op_type == "Where"]
    assert wheres
    i = np.array([3, -2, 9, -10], np.int32)
    _check_with_sofie(m, i)
    _sofie_export_runs_in_onnxruntime(m, i)


@pytest.mark.slow   # about 12 s of unrolled recurrences through SOFIE: in .ci/run's slow set
def test_trap_gru_reset_before_is_written_out_step_by_step():
    """SOFIE's GRU with linear_before_reset=0 (Keras reset_after=False) multiplies (r*h) by R with an
    sgemm whose input and output are one buffer, losing the candidate's recurrent term: for SOFIE the
    same equations are written out step by step in plain operators (onnx/unrolled.py)."""
    model = _keras_model(keras.layers.GRU(4, go_backwards=True, reset_after=False, return_sequences=True))
    x = _f32(2, 7, 3)
    m = j2s.from_keras(model, example_input=x, name="GruResetBefore")
    assert [_attr(n, "linear_before_reset") for n in _nodes(m) if n.op_type == "GRU"] == [0]
    assert "GRU" not in [n.op_type for n in _nodes(m, "sofie")]
    _check_with_sofie(m, x)
    _sofie_export_runs_in_onnxruntime(m, x)


def test_trap_conv_transpose_3d_is_refused_by_sofie(tmp_path):
    """SOFIE has no 3-D ConvTranspose: its parser's refusal reaches the user as a BuildError."""
    fn = lambda k, x: lax.conv_general_dilated(x, k, (1, 1, 1), [(1, 1)] * 3, lhs_dilation=(2, 2, 2),   # noqa: E731
                                               dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    m = j2s.convert(fn, _f32(2, 2, 2, 2, 3), _f32(1, 2, 2, 2, 2), name="ConvT3d", progress=False)
    assert "ConvTranspose" in [n.op_type for n in _nodes(m, "sofie")]
    with pytest.raises(BuildError, match="SOFIE could not generate ConvT3d: .*3D Conv Transpose not yet supported"):
        m.generate(tmp_path, backend="sofie")


# -- Keras and channels-first models through real SOFIE ------------------------------------------------

_LAYERS = {name: factory for name, factory, _ in tk.LAYERS}


def _recurrent_model():
    """Keras LSTM, GRU (sequences), SimpleRNN and Bidirectional GRU and LSTM side by side."""
    L = keras.layers
    return _keras_model(*[_LAYERS[n]() for n in ("lstm", "gru_sequences", "simple_rnn", "bidirectional_gru")],
                        L.Bidirectional(L.LSTM(3)), shape=(6, 3), seed=1)


@pytest.mark.slow   # about 11 s: in .ci/run's slow set, beside the unrolled recurrences below
def test_keras_recurrent_layers_through_real_sofie():
    x = _f32(2, 6, 3)
    _check_with_sofie(j2s.from_keras(_recurrent_model(), example_input=x, name="Recurrent"), x)


@pytest.mark.slow   # about 22 s of unrolled recurrences through SOFIE: in .ci/run's slow set
def test_trap_recurrent_layers_at_a_run_time_batch_are_written_out_step_by_step():
    """SOFIE's LSTM, GRU and RNN refuse a run-time (Dim) batch ("is a dynamic tensor", whatever the
    layout): for SOFIE each is its equations step by step (onnx/unrolled.py); batches 1, 7 and max."""
    model = _keras_model(*[_LAYERS[n]() for n in ("lstm", "gru_sequences", "simple_rnn")], shape=(6, 3), seed=4)
    m = j2s.from_keras(model, example_input=_f32(2, 6, 3), name="RecurrentN", batch="dynamic", max_batch=16)
    assert {"LSTM", "GRU", "RNN"} <= {n.op_type for n in _nodes(m)}
    assert not {"LSTM", "GRU", "RNN"} & {n.op_type for n in _nodes(m, "sofie")}
    _check_with_sofie(m, *[_f32(n, 6, 3) for n in (1, 7, 16)])


def attention_block(name):
    """Self-attention with a residual, LayerNormalization and a feed-forward Dense (a transformer
    block): the converted model and an input."""
    L = keras.layers
    inp = keras.Input((4, 6))
    y = L.LayerNormalization()(inp + _LAYERS["multi_head_self_attention"]()(inp))
    y = L.LayerNormalization()(y + L.Dense(6)(L.Dense(12, activation="gelu")(y)))
    x = _f32(3, 4, 6)
    return j2s.from_keras(tk.randomise(keras.Model(inp, y), seed=2), example_input=x, name=name), x


def normalisation_layers(name):
    """BatchNormalization (last axis and channels-first) and LayerNormalization (one and two axes)."""
    L = keras.layers
    model = _keras_model(*[_LAYERS[n]() for n in ("batch_norm_conv_channels_first", "layer_norm_two_axes")],
                         L.BatchNormalization(), L.LayerNormalization(), shape=(3, 4, 5), seed=3)
    x = _f32(2, 3, 4, 5)
    return j2s.from_keras(model, example_input=x, name=name), x


def test_keras_attention_block_through_real_sofie():
    _check_with_sofie(*attention_block("AttentionBlock"))


def test_keras_normalisation_layers_through_real_sofie():
    _check_with_sofie(*normalisation_layers("Norms"))


@pytest.mark.parametrize("batch", [None, "dynamic"])
def test_nchw_cnn_through_real_sofie(batch):
    """Channels-first convolutions, pooling and a dense head; at a run-time batch at 1, 7 and max."""
    m = j2s.convert(tl.nchw_cnn, tl.PARAMS, tl.X, name="NchwCnn", batch=batch,
                    max_batch=batch and 16, progress=False)
    _check_with_sofie(m, *([tl.X] if batch is None else [_f32(n, *tl.X.shape[1:]) for n in (1, 7, 16)]))
