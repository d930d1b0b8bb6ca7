"""The public API: pytrees in and out, weight naming, conversion-time folding, generate/summary."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr2sofie as j2s
from jaxpr2sofie.ir.ops.movement import Transpose
from jaxpr2sofie.cpp import memory

from helpers import convert_and_check

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 6)).astype(np.float32)


def dense_params():
    return {"Dense_0": {"kernel": rng.standard_normal((6, 4)).astype(np.float32),
                        "bias": rng.standard_normal(4).astype(np.float32)}}


def test_weights_named_by_key_path_and_bias_fused():
    p = dense_params()
    m = convert_and_check(lambda p, x: x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], p, X)
    names = {t.name for t in m.graph.weights()}
    assert names == {"Dense_0_kernel", "Dense_0_bias"}
    assert [op.op_type for op in m.graph.ops] == ["Gemm"]
    assert m.parameter_count() == 6 * 4 + 4


def test_constant_work_is_folded_into_weights():
    """A weight transpose, a reshape of a weight and a broadcast constant cost nothing at run time."""
    p = {"w": rng.standard_normal((4, 6)).astype(np.float32), "s": rng.standard_normal((2, 2)).astype(np.float32)}
    f = lambda p, x: (x @ p["w"].T) * p["s"].reshape(4) + jnp.arange(4.0) + jnp.ones((2, 4))
    m = convert_and_check(f, p, X)
    assert not any(isinstance(op, Transpose) for op in m.graph.ops)
    # the broadcast constants are stored once per distinct value, not batch times
    assert all(t.size <= 24 for t in m.graph.weights())
    assert "iota" not in m.summary()


def test_several_inputs_and_outputs_follow_pytree_order():
    def f(p, inputs):
        a, b = inputs["jets"], inputs["leptons"]
        return {"score": jnp.tanh(a @ p["w"]), "aux": (b.sum(axis=1), jnp.argmax(b, axis=1))}
    p = {"w": rng.standard_normal((6, 3)).astype(np.float32)}
    x = {"jets": X, "leptons": rng.standard_normal((2, 5)).astype(np.float32)}
    m = convert_and_check(f, p, x)
    assert m.graph.inputs == ["jets", "leptons"]
    out = m.compile()(x["jets"], x["leptons"])
    want = f(p, x)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(want)   # the function's own dict
    for got, w in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    assert out["aux"][1].dtype == np.int32          # the argmax
    assert m.graph.outputs == ["aux_0", "aux_1", "score"]     # named by their pytree paths


def test_params_as_lists_tuples_and_dataclasses():
    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Layer:
        w: jax.Array
        b: jax.Array

    p = [Layer(rng.standard_normal((6, 5)).astype(np.float32), np.zeros(5, np.float32)),
         (rng.standard_normal((5, 2)).astype(np.float32),)]
    m = convert_and_check(lambda p, x: jnp.tanh(x @ p[0].w + p[0].b) @ p[1][0], p, X)
    assert {t.label for t in m.graph.weights()} == {"param_0.w", "param_0.b", "param_1.0"}



def test_jitted_function_without_params():
    m = convert_and_check(jax.jit(lambda x: jnp.sin(x) * 2.0), None, X)
    assert m.parameter_count() == 0


def test_output_that_is_an_input_or_a_constant():
    m = convert_and_check(lambda x: (x, jnp.ones(3), x.reshape(12)), None, X)
    assert len(m.graph.outputs) == 3


def test_generate_writes_header_and_weights(tmp_path):
    p = dense_params()
    m = j2s.convert(lambda p, x: x @ p["Dense_0"]["kernel"], p, X, name="Net")
    hxx, dat = m.generate(tmp_path)
    text = hxx.read_text()
    assert "namespace TMVA_SOFIE_Net" in text and "struct Session" in text
    assert 'Session(std::string weight_file = "Net.dat")' in text
    assert "std::vector<float> infer(const float* tensor_x)" in text
    # a dense layer's kernel is stored as the generated code reads it: panels of 16 columns,
    # here one panel [K=6][16] whose last 12 columns are zero
    first = dat.read_text().splitlines()[0]
    assert first == "tensor_Dense_0_kernel 96"
    values = np.array(dat.read_text().splitlines()[1].split(), np.float32).reshape(6, 16)
    np.testing.assert_array_equal(values[:, :4], p["Dense_0"]["kernel"])   # exact round trip
    assert not values[:, 4:].any()


def test_summary_lists_operators_shapes_and_flops():
    m = j2s.convert(lambda p, x: jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]), dense_params(), X)
    s = m.summary()
    assert "Gemm" in s and "+relu" in s and "(2, 4)" in s   # the relu runs in the product's epilogue
    assert m.flops() == 2 * 2 * 6 * 4 + 2 * 4 + 2 * 4
    assert f"{m.parameter_count()} values" in s


def test_softmax_chain_becomes_one_operator_and_passes_can_be_switched_off():
    f = lambda x: jax.nn.softmax(x * 2.0, axis=0)
    m = convert_and_check(f, None, X)
    assert [op.op_type for op in m.graph.ops] == ["Mul", "Softmax"]
    raw = j2s.convert(f, None, X, disable_passes=("fuse_softmax",))
    assert "Softmax" not in [op.op_type for op in raw.graph.ops]
    np.testing.assert_allclose(raw.compile()(X), m.compile()(X), rtol=1e-6, atol=1e-7)


def test_buffers_are_reused_across_a_deep_chain():
    def f(x):
        for _ in range(12):
            x = jnp.tanh(x * 1.1 + 0.1)
        return x
    # unfused (fused, the whole chain is one loop with nothing in memory between its steps)
    m = convert_and_check(f, None, X, disable_passes=["fuse_elementwise"])
    slots, assign = memory.buffer_plan(m.graph)
    assert len(assign) >= 20 and len(slots) <= 3
    unshared = j2s.convert(f, None, X, disable_passes=("reuse_buffers", "fuse_elementwise"))
    assert len(memory.buffer_plan(unshared.graph)[0]) == len(assign)
    np.testing.assert_array_equal(unshared.compile()(X), m.compile()(X))


def test_dense_layers_read_packed_weights_with_bias_and_relu_in_the_epilogue(tmp_path):
    rng = np.random.default_rng(4)
    p = {"w": rng.standard_normal((20, 37)).astype(np.float32), "b": rng.standard_normal(37).astype(np.float32),
         "v": rng.standard_normal((37, 3)).astype(np.float32)}
    f = lambda p, x: jax.nn.relu(x @ p["w"] + p["b"]) @ p["v"]
    x = rng.standard_normal((7, 20)).astype(np.float32)
    m = convert_and_check(f, p, x)
    assert [op.op_type for op in m.graph.ops] == ["Gemm", "MatMul"]
    assert "detail::gemm_packed<1>(" in m.header() and "J2S_SGEMM" not in m.header()
    # the weight file holds the packed panels (3 panels of 16 columns for N = 37); the ONNX export
    # and the summary keep the logical layout
    m.generate(tmp_path)
    text = (tmp_path / f"{m.name}.dat").read_text()
    assert f"tensor_{m.graph.inputs[0]}" not in text and " 960\n" in text   # 3 * 20 * 16
    assert m.parameter_count() == 20 * 37 + 37 + 37 * 3
    plain = j2s.convert(f, p, x, disable_passes=("pack_weights", "fuse_activation"))
    assert [op.op_type for op in plain.graph.ops] == ["Gemm", "Relu", "MatMul"]
    assert "detail::gemm_packed<" not in plain.header()   # no call (the shared kernels' comments name it)
    np.testing.assert_allclose(plain.compile()(x), m.compile()(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ one set of options, names that survive
def test_every_bridge_takes_every_convert_option_with_the_same_default():
    """convert's options are the definition (jaxpr2sofie/options.py): each bridge takes all of them,
    with convert's defaults, so an option added to convert alone fails here."""
    import inspect
    from jaxpr2sofie.flax_bridge import from_flax, from_nnx
    from jaxpr2sofie.keras_bridge import from_keras
    from jaxpr2sofie.options import convert_options
    options = convert_options()
    assert {"name", "batch", "max_batch", "blas", "progress", "disable_passes", "output_names"} <= set(options)
    for bridge in (from_flax, from_nnx, from_keras):
        params = inspect.signature(bridge).parameters
        for k, default in options.items():
            assert k in params, f"{bridge.__name__} does not take convert's option {k!r}"
            assert params[k].default == default, f"{bridge.__name__}({k}=) defaults to {params[k].default!r}"
        assert "call_kwargs" in params      # the one route for the model's own call arguments


def test_a_dict_output_keeps_its_keys_in_the_header_and_the_compiled_model(tmp_path):
    p = {"w": rng.standard_normal((6, 4)).astype(np.float32)}

    def f(p, x):
        logits = x @ p["w"]
        return {"logits": logits, "prob": jax.nn.softmax(logits), "heads": {"top": jnp.max(logits, axis=1)}}
    m = convert_and_check(f, p, X, name="Named")
    assert m.graph.outputs == ["heads_top", "logits", "prob"]
    out = m.compile()(X)
    want = f(p, X)
    assert isinstance(out, dict) and set(out) == {"logits", "prob", "heads"} and set(out["heads"]) == {"top"}
    for k in ("logits", "prob"):
        np.testing.assert_allclose(out[k], want[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["heads"]["top"], want["heads"]["top"], rtol=1e-5, atol=1e-6)
    hxx, _ = m.generate(tmp_path)
    text = hxx.read_text()
    assert "tensor_logits" in text and "tensor_prob" in text and "tensor_heads_top" in text
    assert "output logits" in m.summary()


def test_output_names_option_and_outputs_that_are_weights_or_inputs():
    p = {"w": rng.standard_normal((6, 4)).astype(np.float32)}
    m = convert_and_check(lambda p, x: (x @ p["w"], x), p, X, name="Renamed")
    assert m.graph.outputs[0] != "jet_score"        # a tuple keeps the operations' names by default
    m = j2s.convert(lambda p, x: (x @ p["w"], x), p, X, output_names=["jet_score", "echo"])
    assert m.graph.outputs == ["jet_score", "echo"]
    a, b = m.compile()(X)                          # a tuple stays a tuple
    np.testing.assert_allclose(a, X @ p["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(b, X)
    m = j2s.convert(lambda p, x: {"w": p["w"], "x": x}, p, X)    # a weight and an input as named outputs
    out = m.compile()(X)
    np.testing.assert_array_equal(out["w"], p["w"])
    np.testing.assert_array_equal(out["x"], X)
    with pytest.raises(ValueError, match="one non-empty string per output"):
        j2s.convert(lambda p, x: (x @ p["w"], x), p, X, output_names=["only_one"])
