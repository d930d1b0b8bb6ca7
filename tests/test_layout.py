"""The `sink_transposes` pass: a channels-first (NCHW) network pays for its layout once, not per
layer, and gives the numbers it gave without the pass. Every model is compiled and compared with
JAX computed live."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr2sofie as j2s

from helpers import assert_close, convert_and_check

_rng = np.random.default_rng(14)
DN = ("NCHW", "OIHW", "NCHW")


def _f32(*shape, scale=1.0):
    return (scale * _rng.standard_normal(shape)).astype(np.float32)


def nchw_cnn(p, x):
    """conv + bias + relu, conv + bias + relu, 2x2 max pool, flatten, dense: all channels-first."""
    y = jnp.maximum(lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=DN) + p["b1"], 0.0)
    y = jnp.maximum(lax.conv_general_dilated(y, p["k2"], (1, 1), "SAME", dimension_numbers=DN) + p["b2"], 0.0)
    y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    return y.reshape(y.shape[0], -1) @ p["w"] + p["bw"]


PARAMS = {"k1": _f32(6, 3, 3, 3, scale=0.4), "b1": _f32(1, 6, 1, 1, scale=0.2),
          "k2": _f32(8, 6, 3, 3, scale=0.3), "b2": _f32(1, 8, 1, 1, scale=0.2),
          "w": _f32(8 * 5 * 4, 5, scale=0.2), "bw": _f32(5, scale=0.1)}
X = _f32(3, 3, 10, 8)


def _count(m, op_type) -> int:
    return sum(op.op_type == op_type for op in m.graph.walk())


def test_nchw_cnn_keeps_two_transposes_and_fuses_the_epilogues():
    m = convert_and_check(nchw_cnn, PARAMS, X, atol=1e-4, name="NchwCnn")
    # the one into channels-last at the input; the one back before the flatten went into the
    # dense weight's row order
    assert _count(m, "Transpose") == 1, m.summary()
    types = {op.op_type for op in m.graph.walk()}
    assert not types & {"Add", "Relu", "Max"}, m.summary()   # bias and relu ride in the Conv epilogues
    assert all(op.epilogue for op in m.graph.ops if op.op_type == "Conv"), m.summary()


def test_without_the_pass_same_numbers():
    on = j2s.convert(nchw_cnn, PARAMS, X, name="NchwOn")
    off = j2s.convert(nchw_cnn, PARAMS, X, name="NchwOff", disable_passes=["sink_transposes"])
    assert _count(off, "Transpose") == 4 and _count(on, "Transpose") <= 2
    for x in (X, _f32(3, 3, 10, 8)):
        got_on, got_off = on.compile()(x), off.compile()(x)
        assert_close(got_off, np.asarray(nchw_cnn(PARAMS, x)), 1e-4, what="pass disabled")
        np.testing.assert_allclose(got_on, got_off, rtol=1e-5, atol=1e-5)


def test_nchw_cnn_dynamic_batch_at_1_and_5():
    x5 = _f32(5, 3, 10, 8)
    m = convert_and_check(nchw_cnn, PARAMS, x5, atol=1e-4, name="NchwDyn", batch="dynamic",
                          extra_inputs=[_f32(1, 3, 10, 8)])
    assert m.graph.dynamic and _count(m, "Transpose") <= 2, m.summary()


def test_transposed_tensor_that_is_also_an_output_stays():
    """conv + bias is returned as well as fed to relu: its NCHW form must exist, and stay right."""
    def fn(p, x):
        y = lax.conv_general_dilated(x, p["k1"], (1, 1), "VALID", dimension_numbers=DN) + p["b1"]
        return y, jnp.tanh(y) * 2.0
    m = convert_and_check(fn, PARAMS, X[:, :, :6, :6], atol=1e-4, name="AlsoOutput")
    assert _count(m, "Transpose") >= 1


def test_tensor_read_in_two_layouts_is_not_moved():
    """x.T + x: the Transpose cannot sink into an add whose other operand is in the other layout."""
    def fn(x):
        t = jnp.swapaxes(x, 1, 2)
        return (t + x) * 2.0, jnp.exp(t) - t
    m = convert_and_check(fn, None, _f32(2, 4, 4), name="TwoLayouts")
    assert _count(m, "Transpose") >= 1


def test_full_shape_weight_is_permuted_and_output_transposed_once():
    """A weight of the transposed tensor's full shape is permuted at conversion time; the final
    Transpose lands on the output, after the elementwise chain."""
    w = _f32(2, 5, 4, 3)
    def fn(p, x):
        return jnp.tanh(jnp.transpose(x, (0, 2, 3, 1)) * p["w"] + 0.5)
    m = convert_and_check(fn, {"w": w}, _f32(2, 3, 5, 4), name="FullWeight")
    assert [op.op_type for op in m.graph.ops][-1] == "Transpose", m.summary()
    assert _count(m, "Transpose") == 1


def test_pairs_cancel_inside_a_loop_body():
    """A scan body that swaps axes, works, and swaps back: the sub-graph's pair cancels too."""
    w = _f32(1, 4, 3, scale=0.5)
    def fn(p, x):
        def body(c, _):
            c = jnp.swapaxes(jnp.tanh(jnp.swapaxes(c, 1, 2) * p["w"]) + 0.1, 1, 2)
            return c, c.sum()
        return lax.scan(body, x, None, length=4)
    m = convert_and_check(fn, {"w": w}, _f32(2, 3, 4), name="LoopBody")
    assert _count(m, "Transpose") == 0, m.summary()


def test_flatten_into_a_run_time_matrix_keeps_its_transpose():
    """The rows of a matrix known only at run time cannot be reordered: the Transpose stays."""
    def fn(x, w):
        y = jnp.maximum(lax.conv_general_dilated(x, PARAMS["k1"], (1, 1), "SAME", dimension_numbers=DN), 0.0)
        return y.reshape(y.shape[0], -1) @ w
    m = convert_and_check(lambda xs: fn(*xs), None, (X, _f32(6 * 10 * 8, 4, scale=0.1)), atol=1e-4, name="RtDense")
    assert _count(m, "Transpose") == 2, m.summary()


def test_flatten_of_the_whole_tensor_keeps_its_transpose():
    """A flatten that mixes the batch into the rows is not a per-example reordering."""
    def fn(p, x):
        y = jnp.maximum(lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=DN) + p["b1"], 0.0)
        return jnp.tanh(y.reshape(-1, 40))
    convert_and_check(fn, PARAMS, X, atol=1e-4, name="WholeFlat")


@pytest.mark.parametrize("disable", [(), ("sink_transposes",)])
def test_nchw_cnn_onnx_export_matches(disable):
    pytest.importorskip("onnxruntime")
    from test_onnx import export_and_check
    m = j2s.convert(nchw_cnn, PARAMS, X, name="NchwOnnx", disable_passes=disable)
    export_and_check(m, X, _f32(3, 3, 10, 8))


def test_pass_is_listed_and_switchable():
    with pytest.raises(ValueError, match="sink_transposes"):
        j2s.convert(nchw_cnn, PARAMS, X, disable_passes=["no_such_pass"])
    x = X[:1]
    ref = np.asarray(nchw_cnn(PARAMS, x))
    got = j2s.convert(nchw_cnn, PARAMS, x, disable_passes=["sink_transposes"]).compile()(x)
    assert_close(got, ref, 1e-4, what="disabled")
