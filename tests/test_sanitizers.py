"""The generated code under AddressSanitizer + UndefinedBehaviorSanitizer (JAXPR2SOFIE_SANITIZE=1).

The default run checks a selection chosen for index arithmetic (strides, padding, dilation, groups,
gathers, reverse loops) and the model zoo's CNNs; `--runslow` checks every primitive case and every
model test. Any sanitizer report fails the run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr2sofie as j2s
from jaxpr2sofie.cpp import sanitize

TESTS = Path(__file__).resolve().parent

CASES = ["add_transposed_operand", "select_n_int3", "softmax", "transpose_4d", "slice_steps",
         "pad_value_interior_negative", "dynamic_slice_clamped", "rev_rank1_and_4d", "dot_general_batched",
         "dot_general_two_contracting", "reduce_of_transposed", "argmax_ties_3d", "cumulative_rank3",
         "gather_index_windows_clip", "gather_take_fill_out_of_range", "conv2d_nchw_same_stride2",
         "conv2d_groups3_nchw_stride2", "conv2d_depthwise_multiplier2_stride2", "conv2d_lhs_dilation",
         "conv3d_ndhwc_explicit_padding", "pool_max_window_dilation", "pool_sum_base_dilation", "scan_rnn",
         "layer_norm"]
MODELS = ["test_mlp", "test_cnn_nhwc", "test_depthwise_separable_cnn", "test_several_inputs_and_outputs"]


def _sanitizer_available() -> bool:
    import shutil
    import tempfile
    cxx = shutil.which("g++")
    if not cxx:
        return False
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "t.cpp").write_text("int main() { return 0; }\n")
        return subprocess.run([cxx, "-fsanitize=address,undefined", "t.cpp", "-o", "t"], cwd=d,
                              capture_output=True).returncode == 0


needs_asan = pytest.mark.skipif(not _sanitizer_available(),
                                reason="g++ cannot build with -fsanitize=address,undefined (libasan/libubsan missing)")


@needs_asan
def test_the_sanitized_build_reports_an_out_of_bounds_write(monkeypatch):
    """The mode must be able to fail: one write past the end of the output is caught."""
    monkeypatch.setenv("JAXPR2SOFIE_SANITIZE", "1")
    m = j2s.convert(lambda x: x * 2.0, None, np.ones((3, 4), np.float32), name="Overflow")
    op = m.graph.ops[-1]
    from jaxpr2sofie.cpp.rules import RULES
    emit = RULES[type(op)]

    def emit_one_too_many(o, w, g):
        emit(o, w, g)
        if o is op:
            w.line(f"{w.ref(op.outputs[0])}[{g.tensors[op.outputs[0]].size}] = 0.f;")
    monkeypatch.setitem(RULES, type(op), emit_one_too_many)
    compiled = m.compile()
    assert isinstance(compiled, sanitize.SanitizedModel)
    with pytest.raises(j2s.BuildError, match="AddressSanitizer"):
        compiled(np.ones((3, 4), np.float32))


@needs_asan
def test_sanitized_model_matches_jax(monkeypatch):
    monkeypatch.setenv("JAXPR2SOFIE_SANITIZE", "1")
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    import jax
    m = j2s.convert(lambda p, x: jax.nn.softmax(x @ p), w, np.ones((16, 64), np.float32))
    v = m.validate()
    assert type(m._compiled).__name__ == "SanitizedModel" and v.max_rel < 1e-5, v


@pytest.mark.slow   # every primitive case built under ASan+UBSan: about 90 s, in .ci/run's slow set
@needs_asan
def test_primitive_cases_and_models_under_sanitizers(request):
    """Zero reports: the tests run in a child pytest with the sanitized build mode on."""
    if request.config.getoption("--runslow"):
        # and the convolution kernels (depthwise, implicit GEMM, Winograd) on every path of theirs
        targets = [str(TESTS / "test_primitives.py"), str(TESTS / "test_models.py"),
                   f"{TESTS / 'test_conv_kernels.py'}::test_conv_kernels_match_jax[O3-native]", "--runslow",
                   "-k", "matches_jax or test_models"]
    else:
        targets = [f"{TESTS / 'test_primitives.py'}::test_case_matches_jax[{c}]" for c in CASES]
        targets += [f"{TESTS / 'test_models.py'}::{t}" for t in MODELS]
    env = dict(os.environ, JAXPR2SOFIE_SANITIZE="1")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets],
                         capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=3000)
    tail = res.stdout[-6000:] + res.stderr[-3000:]
    assert res.returncode == 0, tail
    assert " passed" in res.stdout and "failed" not in res.stdout.splitlines()[-1], tail


@needs_asan
def test_text_weights_load_under_sanitizers(tmp_path):
    """The header's text reader (block refills, the float fast path reading up to 64 bytes ahead,
    a file ending without a newline, errors) under ASan and UBSan; compile() itself loads binary."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((300, 300)) * 10.0 ** rng.integers(-40, 35, (300, 300))).astype(np.float32)
    w.reshape(-1)[:6] = [np.nan, -np.inf, -0.0, 1e-45, 3.4028235e38, 16777217]
    b = np.arange(300, dtype=np.float32)
    m = j2s.convert(lambda p, x: (jnp.concatenate([x, p["w"]], 0), x @ p["w"] + p["b"]), {"w": w, "b": b},
                    np.ones((1, 300), np.float32), name="TextAsan")
    exe = sanitize.build_runner(m.graph)
    _, dat = m.generate(tmp_path)
    x = rng.standard_normal((1, 300)).astype(np.float32)
    stacked, _ = sanitize.SanitizedModel(m.graph, exe, weight_file=dat)(x)
    np.testing.assert_array_equal(stacked[1:].view(np.uint32), w.view(np.uint32))
    dat.write_bytes(dat.read_bytes().rstrip(b"\n"))          # no newline at the very end
    np.testing.assert_array_equal(sanitize.SanitizedModel(m.graph, exe, weight_file=dat)(x)[0][1:], stacked[1:])
    dat.write_bytes(dat.read_bytes()[:len(dat.read_bytes()) // 2])
    with pytest.raises(j2s.WeightFileError, match="is truncated inside tensor_w"):
        sanitize.SanitizedModel(m.graph, exe, weight_file=dat)(x)
