"""What a new user meets first: calling conventions, argument checks, dtypes, source lines, the
README's C++ build line, progress output. Each test asserts the fixed behaviour or the error's
type and message."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr2sofie as j2s
from jaxpr2sofie import source
from jaxpr2sofie.cpp.ops.linalg import ROWS_GEMM

from helpers import assert_close

ROOT = Path(__file__).resolve().parents[1]
X = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)


# ------------------------------------------------------------------- calling convention
def two_args(p, x):
    return x * 2.0 + (0.0 if p is None else p)


def one_arg(x):
    return x * 3.0


def test_params_none_with_a_two_argument_function_calls_fn_none_x():
    m = j2s.convert(two_args, None, X)
    assert_close(m.compile()(X), X * 2.0)


def test_params_given_to_a_one_argument_function_says_what_to_change():
    with pytest.raises(TypeError, match=r"params were given but the function takes 1 positional argument.*"
                                        r"fn\(params, x\).*params=None"):
        j2s.convert(one_arg, {"w": X}, X)


def test_one_argument_function_without_params():
    assert_close(j2s.convert(one_arg, None, X).compile()(X), X * 3.0)


# ------------------------------------------------------------------- argument checks
def test_example_input_of_python_numbers_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"example_input: the leaf at 'x_0' is a float.*np.asarray"):
        j2s.convert(one_arg, None, [1.0, 2.0])


def test_params_holding_a_string_names_its_path():
    with pytest.raises(TypeError, match=r"params: the leaf at 'layer.act' is a str.*functools.partial"):
        j2s.convert(two_args, {"layer": {"act": "relu"}}, X)


@pytest.mark.parametrize("bad, why", [("my-net", "is not a C\\+\\+ identifier"), ("1net", "is not a C\\+\\+ identifier"),
                                      ("class", "is a C\\+\\+ keyword"), (3, "is not a C\\+\\+ identifier")])
def test_model_name_must_be_a_cpp_identifier(bad, why):
    with pytest.raises(ValueError, match=f"name={bad!r} {why}"):
        j2s.convert(one_arg, None, X, name=bad)


def test_generate_into_a_file_name_is_refused(tmp_path):
    m = j2s.convert(one_arg, None, X, name="Net")
    with pytest.raises(ValueError, match=r"generate\(\) takes a directory.*Net.hxx"):
        m.generate(tmp_path / "out" / "Net.hxx")
    assert not (tmp_path / "out").exists(), "nothing may be created for a refused path"


# ------------------------------------------------------------------- dtypes
def test_float64_inputs_and_params_become_float32_with_a_warning():
    with pytest.warns(UserWarning, match=r"params w is float64: converted to float32"):
        m = j2s.convert(lambda p, x: x @ p["w"], {"w": np.ones((3, 2))}, X)
    assert m.graph.tensors[m.graph.weights()[0].name].dtype == "float32"
    with pytest.warns(UserWarning, match=r"example_input x is float64: converted to float32"):
        m = j2s.convert(one_arg, None, X.astype(np.float64))
    assert m.graph.tensors[m.graph.inputs[0]].dtype == "float32"
    assert_close(m.compile()(X.astype(np.float64)), X * 3.0)


def test_float64_computation_under_x64_is_reported_with_its_line():
    with jax.enable_x64(True):
        with pytest.raises(j2s.UnsupportedPrimitiveError) as err:
            j2s.convert(lambda x: (x.astype(jnp.float64) * 2.0).astype(jnp.float32), None, X)
    msg = str(err.value)
    assert "convert_element_type: computes in float64" in msg and "test_user_path.py:" in msg, msg


def test_integer_matrix_product_names_the_operand_and_line():
    with pytest.raises(j2s.UnsupportedPrimitiveError) as err:
        j2s.convert(lambda x: x @ x.T, None, np.ones((2, 3), np.int32))
    msg = str(err.value)
    assert "dot_general" in msg and "int32" in msg and "only float32" in msg, msg
    assert "test_user_path.py:" in msg, msg


def complex_fft(x):
    return jnp.real(jnp.fft.fft(x)) + jax.lax.lgamma(x)


def test_complex_numbers_are_unsupported_primitives_listed_at_once():
    with pytest.raises(j2s.UnsupportedPrimitiveError) as err:
        j2s.convert(complex_fft, None, X)
    prims = err.value.primitives
    assert {"fft", "real", "lgamma"} <= set(prims), prims
    assert "produces complex numbers (complex64)" in str(err.value)
    line = complex_fft.__code__.co_firstlineno + 1
    assert all(where.startswith(f"tests/test_user_path.py:{line}") or f"test_user_path.py:{line}" in where
               for _, _, where in err.value.problems), err.value.problems


def test_unsupported_input_dtype_names_the_input():
    with pytest.raises(j2s.UnsupportedDtypeError, match=r"input 'x' has dtype float16"):
        j2s.convert(one_arg, None, X.astype(np.float16))


def test_prng_key_in_params_folds_like_a_constant():
    def noisy(p, x):
        return x + jax.random.normal(p["key"], x.shape)
    params = {"key": jax.random.key(7)}
    m = j2s.convert(noisy, params, X)
    assert_close(m.compile()(X), np.asarray(noisy(params, X)))


# ------------------------------------------------------------------- source lines
def test_generated_code_carries_relative_source_lines_only():
    def net(p, x):
        return jnp.tanh(x @ p)
    header = j2s.convert(net, np.ones((3, 4), np.float32), X, name="Where").header()
    assert re.search(r"test_user_path\.py:\d+", header), header
    for absolute in {str(ROOT), str(Path.cwd()), sys.prefix, str(Path.home())}:
        assert absolute not in header, f"the header leaks the path {absolute}"


def test_framework_and_stdlib_files_are_not_user_code():
    import importlib.util
    for lib in ("jax", "flax", "keras", "equinox", "haiku", "numpy"):
        assert not source._is_user_file(importlib.util.find_spec(lib).origin), lib
    assert not source._is_user_file(os.__file__)
    assert source._is_user_file(__file__)
    # a user's own package installed next to the frameworks is user code
    import sysconfig
    assert source._is_user_file(os.path.join(sysconfig.get_paths()["purelib"], "my_analysis", "model.py"))


def test_display_path_is_relative_to_the_project(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert source.display_path(__file__) == "tests/test_user_path.py"


# ------------------------------------------------------------------- progress
def test_progress_shows_the_stages_and_can_be_silenced(capsys, monkeypatch):
    j2s.convert(lambda p, x: jnp.tanh(x @ p) * 2.0, np.ones((3, 4), np.float32), X, progress=True)
    err = capsys.readouterr().err
    for stage in ("tracing", "lowering 3 equations", "3/3", "graph passes", "converted"):
        assert stage in err, err
    j2s.convert(one_arg, None, X, progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("JAXPR2SOFIE_QUIET", "1")
    j2s.convert(one_arg, None, X)          # auto: silenced by the variable (and stderr is no terminal here)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------- the README's C++ build line
def _readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    return block.split("```", 2)[1].split("\n", 1)[1]


def test_readme_cpp_build_line_builds_and_runs(tmp_path):
    if not shutil.which("g++"):
        pytest.skip("g++ is not on PATH")
    rng = np.random.default_rng(0)
    params = {"Dense_0": {"kernel": rng.standard_normal((16, 8)).astype(np.float32),
                          "bias": np.zeros(8, np.float32)}}

    def net(p, x):   # the README's "Using it" model
        return jax.nn.softmax(jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]))

    m = j2s.convert(net, params, np.zeros((1, 16), np.float32), name="Net")
    m.generate(tmp_path / "out")
    (tmp_path / "main.cpp").write_text(_readme_block("cpp-main"))
    build = _readme_block("cpp-build").strip()
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    res = subprocess.run(["bash", "-c", build], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, f"{build}\n{res.stderr[-4000:]}"
    got = np.array([float(v) for v in res.stdout.split()], np.float32)
    want = np.asarray(net(params, np.full((1, 16), 0.5, np.float32))).ravel()
    assert_close(got, want, rtol=1e-5, what="README C++ program")


def test_header_without_blas_links_at_O0_without_a_blas_library(tmp_path):
    if not shutil.which("g++"):
        pytest.skip("g++ is not on PATH")
    m = j2s.convert(lambda p, x: jnp.tanh(x @ p), np.ones((3, 4), np.float32), X, name="Small")
    m.generate(tmp_path)
    (tmp_path / "main.cpp").write_text('#include "Small.hxx"\n#include <cstdio>\nint main() {\n'
                                       '   TMVA_SOFIE_Small::Session s("Small.dat");\n'
                                       '   float x[6] = {1, 1, 1, 1, 1, 1};\n'
                                       '   std::printf("%g\\n", s.infer(x)[0]);\n}\n')
    res = subprocess.run(["g++", "-O0", "-std=c++17", "main.cpp", "-o", "main"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    out = subprocess.run(["./main"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert abs(float(out) - np.tanh(3.0)) < 1e-6


def _cli(*args, cwd=None):
    exe = Path(sys.executable).parent / "jaxpr2sofie"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "jaxpr2sofie.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_flags_build_a_header_that_calls_blas(tmp_path):
    if not shutil.which("g++"):
        pytest.skip("g++ is not on PATH")
    res = _cli("flags")
    assert res.returncode == 0 and "-std=c++17" in res.stdout and "-DJ2S_SGEMM=" in res.stdout, res.stderr
    w = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    x = np.ones((64, 64), np.float32)
    # a product of two activations (dense layers use the header's own packed kernel, not BLAS),
    # 64^3 multiply-adds: past what the header's own in-place panel kernel takes
    assert 64 ** 3 > ROWS_GEMM
    m = j2s.convert(lambda p, x: x @ (x @ p).T, w, x, name="Big")
    assert "J2S_SGEMM(" in m.header(), "this model must call BLAS for the test to mean anything"
    m.generate(tmp_path)
    (tmp_path / "main.cpp").write_text('#include "Big.hxx"\n#include <cstdio>\n#include <vector>\nint main() {\n'
                                       '   TMVA_SOFIE_Big::Session s("Big.dat");\n'
                                       '   std::vector<float> x(64 * 64, 1.f);\n'
                                       '   std::printf("%.9g\\n", s.infer(x.data())[5]);\n}\n')
    build = subprocess.run(f"g++ -O2 main.cpp {res.stdout.strip()} -o main", shell=True, cwd=tmp_path,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    out = subprocess.run(["./main"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    want = float((x @ (x @ w).T)[0, 5])
    assert abs(float(out) - want) <= 1e-4 * max(1.0, abs(want))


def test_cli_inspect_lists_complex_and_missing_primitives_at_once(tmp_path):
    (tmp_path / "fftmodel.py").write_text(
        "import jax, jax.numpy as jnp, numpy as np\n"
        "def function(x):\n"
        "    return jnp.real(jnp.fft.fft(x)) + jax.lax.lgamma(x)\n"
        "params = None\n"
        "example_input = np.zeros((2, 8), np.float32)\n")
    res = _cli("inspect", "fftmodel.py", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    for prim in ("fft", "real", "lgamma"):
        assert re.search(rf"- {prim}: .*\[at fftmodel.py:3 \(function\)\]", res.stdout), res.stdout
    assert "produces complex numbers" in res.stdout
