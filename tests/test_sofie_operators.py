"""SOFIE's "operators" route: the RModel built operator by operator through the `sofie` package's bound
`ROperator_*` classes (jaxpr2sofie/rmodel/), then SOFIE generates its header, g++ compiles it under
AddressSanitizer and UndefinedBehaviorSanitizer, and its outputs must match JAX computed here; at a
run-time batch at 1, 7 and the Session's maximum. The same models go through the ONNX route in
test_real_sofie.py.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr2sofie as j2s
from jaxpr2sofie.errors import SofieOperatorsError

import test_layout as tl
import test_models as tm
from helpers import compare_with_jax, slow_except
from test_real_sofie import MODELS, _f32, attention_block, normalisation_layers

import sofie  # noqa: E402  (a dependency of the test extra: a missing package fails, it does not skip)


def _check(m, *inputs, atol=1e-4):
    """SOFIE's header from the operators route, under ASan+UBSan, against JAX on every input."""
    c = m.compile_sofie(sanitize=True, route="operators")
    assert m.sofie_route[0] == "operators"
    for x in inputs:
        flat = m.flat_inputs(x)
        got = c(*flat)
        got = list(got) if isinstance(got, tuple) else [got]
        compare_with_jax(m.traced, flat, got, atol, name=f"{m.name} through SOFIE's operators")


@pytest.mark.parametrize("name", list(MODELS))
def test_model_through_sofies_operators(name):
    """MLP, CNN channels-last, depthwise-separable CNN, conv1d, a model without parameters."""
    fn, params, (seed, *shape) = MODELS[name]
    x, *more = tm._inputs(seed, *shape)
    _check(j2s.convert(fn, params(), x, name=name.title().replace("_", "") + "Ops", progress=False), x, *more)


def test_mlp_at_a_run_time_batch_through_sofies_operators():
    """The batch is SOFIE's Dim N: Session(file, N), doInfer(N, ...); a Gemm bias of N values
    broadcast by SOFIE over the rows, at batches 1, 7 and the maximum."""
    m = j2s.convert(tm.mlp, tm._mlp_params(), tm._inputs(10, 4, 20)[0], name="MlpOpsN", batch="dynamic",
                    max_batch=32, progress=False)
    _check(m, *[_f32(n, 20) for n in (1, 7, 32)])


@pytest.mark.parametrize("batch", [None, "dynamic"])
def test_nchw_cnn_through_sofies_operators(batch):
    m = j2s.convert(tl.nchw_cnn, tl.PARAMS, tl.X, name="NchwCnnOps", batch=batch, max_batch=batch and 16,
                    progress=False)
    _check(m, *([tl.X] if batch is None else [_f32(n, *tl.X.shape[1:]) for n in (1, 7, 16)]))


def test_several_inputs_and_outputs_through_sofies_operators():
    inputs = {"jets": _f32(3, 4), "leptons": _f32(3, 3)}
    _check(j2s.convert(tm.two_tower, tm._multi_params(), inputs, name="TwoTowerOps", progress=False), inputs)


def test_attention_block_through_sofies_operators():
    """Keras multi-head self-attention with a residual, LayerNormalization and a GELU feed-forward."""
    _check(*attention_block("AttentionOps"))


def test_normalisation_layers_through_sofies_operators():
    _check(*normalisation_layers("NormsOps"))


def test_sofie_traps_on_the_operators_route():
    """Asymmetric padding (an explicit Pad), a dilated kernel (written out with its zeros), a product
    without bias (no C), pooling with padding, a reduction and a cumulative sum, in one model."""
    def fn(p, x):
        y = lax.conv_general_dilated(x, p["k"], (1, 1), ((1, 2), (0, 1)), rhs_dilation=(2, 1),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = lax.reduce_window(jax.nn.relu(y), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1),
                              ((0, 0), (1, 0), (0, 1), (0, 0)))
        flat = y.reshape(y.shape[0], -1)
        z = lax.dot_general(flat, p["w"], (((1,), (1,)), ((), ())))
        return jnp.cumsum(z, axis=1) + jnp.max(z, axis=1, keepdims=True) - jnp.sum(y, axis=(1, 2)).mean()
    x = _f32(2, 6, 5, 2)
    k = _f32(3, 2, 2, 4)
    n = np.prod(jax.eval_shape(lambda x: lax.reduce_window(
        lax.conv_general_dilated(x, k, (1, 1), ((1, 2), (0, 1)), rhs_dilation=(2, 1),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC")), -jnp.inf, lax.max, (1, 2, 2, 1),
        (1, 1, 1, 1), ((0, 0), (1, 0), (0, 1), (0, 0))), x).shape[1:])
    m = j2s.convert(fn, {"k": k, "w": _f32(3, int(n))}, x, name="TrapsOps", progress=False)
    _check(m, x, _f32(2, 6, 5, 2))


@pytest.mark.parametrize("dims", [1, 2])
def test_transposed_convolution_through_sofies_operators(dims):
    """An input-dilated convolution (a transposed one) is SOFIE's ConvTranspose with the kernel
    flipped and its dilation written out, then cropped, padded and strided to XLA's window: here
    with kernel dilation, asymmetric padding and a window stride, and a bias and relu after it."""
    spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[dims]

    def fn(p, x):
        y = lax.conv_general_dilated(x, p["k"], (2,) + (1,) * (dims - 1), [(3, 1)] + [(0, 2)] * (dims - 1),
                                     lhs_dilation=(2,) * dims, rhs_dilation=(1,) + (2,) * (dims - 1),
                                     dimension_numbers=spec)
        return jax.nn.relu(y + p["b"])
    x = _f32(2, *(5,) * dims, 3)
    p = {"k": _f32(*(3,) * dims, 3, 4), "b": _f32(4)}
    _check(j2s.convert(fn, p, x, name=f"ConvT{dims}dOps", progress=False), x)


def test_to_rmodel_operators_is_sofies_own_model(tmp_path):
    m = j2s.convert(tm.mlp, tm._mlp_params(), tm._inputs(10, 1, 20)[0], name="MlpOps", progress=False)
    rm = m.to_rmodel(route="operators")
    assert isinstance(rm, sofie.RModel)
    assert list(rm.get_input_tensor_names()) == list(m.graph.inputs)
    assert list(rm.get_output_tensor_names()) == list(m.graph.outputs)
    rm.generate()
    rm.output_generated(str(tmp_path / "MlpOps.hxx"))
    code = (tmp_path / "MlpOps.hxx").read_text()
    assert "namespace SOFIE_MlpOps" in code
    assert "applying RELU" in code    # the first Dense's relu is SOFIE's own Gemm activation
    assert "SOFIE's RModel: route 'operators' (asked for)" in m.summary()


def _unsupported(p, x):
    top, _ = lax.top_k(x @ p, 2)
    steps = lax.fori_loop(0, 3, lambda i, c: c * 0.5 + 1.0, x @ p)
    return top.sum(axis=1) + steps.sum(axis=1)


def test_operators_route_lists_every_unsupported_operator_and_points_to_onnx():
    m = j2s.convert(_unsupported, _f32(4, 5), _f32(2, 4), name="NoOps", progress=False)
    with pytest.raises(SofieOperatorsError) as err:
        m.to_rmodel(route="operators")
    text = str(err.value)
    assert "2 operator(s) cannot be handed to SOFIE" in text
    assert "TopK" in text and "Loop" in text and 'route="onnx"' in text
    assert {p[0] for p in err.value.problems} == {"TopK", "Loop"}


def test_auto_route_takes_operators_when_it_can_else_onnx():
    m = j2s.convert(tm.mlp, tm._mlp_params(), tm._inputs(10, 1, 20)[0], name="MlpAuto", progress=False)
    m.to_rmodel()
    assert m.sofie_route == ("operators", "every operator has a rule on SOFIE's bound operators")
    m = j2s.convert(lambda p, x: lax.top_k(x @ p, 2)[0], _f32(4, 5), _f32(2, 4), name="TopAuto", progress=False)
    assert isinstance(m.to_rmodel(), sofie.RModel)
    assert m.sofie_route[0] == "onnx" and "TopK" in m.sofie_route[1]
    assert "SOFIE's RModel: route 'onnx' (the operators route cannot take TopK" in m.summary()


# -- the differential fuzzer's programs, through SOFIE's operators ------------------------------------

FUZZ_FAMILIES = ("elementwise", "movement", "reduce", "mixed", "dot_general", "conv", "pool")


# mixed programs in the main command, each family on its own in the slow set (.ci/run runs both)
@pytest.mark.parametrize("family", slow_except(FUZZ_FAMILIES, ("mixed",)))
def test_random_programs_through_sofies_operators(family):
    """The fuzzer's random programs (tests/fuzz, seed 0, a stream of their own) whose every operator
    the operators route takes, as one SOFIE build under ASan+UBSan, each judged by the fuzzer's own
    verdicts (a tie or an XLA miscompile is told from a wrong answer). A program the converter or the
    route refuses (documented limitations) is left out; any other error fails."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    from families import Drawer
    from runner import _compare, convert_batch
    from jaxpr2sofie import rmodel
    from jaxpr2sofie.errors import UnsupportedPrimitiveError
    seed, kept = 4000, []
    for k, p in enumerate(Drawer(family, 0, stream=2).batch(24)):
        try:
            rmodel.build(convert_batch([p], seed + k)[0].graph)
        except (UnsupportedPrimitiveError, SofieOperatorsError):
            continue
        kept.append(p)
    # (the others apply a function SOFIE has no operator for: cbrt, atan2, cosh, a cumulative max...)
    assert len(kept) >= 3, f"only {len(kept)} of 24 {family} programs go through the operators route"
    model, xs = convert_batch(kept, seed)
    compiled = model.compile_sofie(sanitize=True, route="operators")
    verdicts = _compare(kept, compiled, model, [np.asarray(v) for v in xs], seed)
    bad = [message for kind, message in verdicts if kind == "mismatch"]
    assert not bad, f"{len(bad)} of {len(kept)} programs differ from JAX through SOFIE:\n\n" + "\n\n".join(bad)
