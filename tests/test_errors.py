"""Every bad input gets a clear error naming the problem and the fix."""
from __future__ import annotations

import ctypes.util
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr2sofie as j2s
from jaxpr2sofie.cpp import build
from jaxpr2sofie.primitives import HANDLERS, Handler, check_params

X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)


def test_all_unsupported_primitives_listed_at_once_with_source_lines():
    def f(x):
        a = lax.lgamma(x)                        # lgamma: no rule
        b = lax.erf_inv(jnp.tanh(x) * 0.5)      # erf_inv: no rule
        c = lax.bessel_i0e(a + b)               # depends on unsupported results: still reported
        return c
    with pytest.raises(j2s.UnsupportedPrimitiveError) as e:
        j2s.convert(f, None, X)
    msg = str(e.value)
    assert set(e.value.primitives) == {"lgamma", "erf_inv", "bessel_i0e"}
    assert "3 unsupported" in msg
    assert "test_errors.py" in msg          # the user's source line, not ours
    for p in ("lgamma", "erf_inv", "bessel_i0e"):
        assert f"- {p}:" in msg


def test_unsupported_primitive_only_in_constant_code_is_folded_not_reported():
    def f(p, x):
        return x * lax.lgamma(p)[None, :]      # lgamma (no rule) of a weight: computed at conversion time
    m = j2s.convert(f, np.array([3.0, 1.0, 2.0, 0.5], np.float32), X)
    np.testing.assert_allclose(m.compile()(X), f(np.array([3.0, 1.0, 2.0, 0.5], np.float32), X), rtol=1e-6)


def test_data_dependent_shape_is_a_trace_error():
    with pytest.raises(j2s.TraceError, match="data-dependent|static graph") as e:
        j2s.convert(lambda x: x[x > 0], None, X)
    assert "NonConcreteBooleanIndexError" in str(e.value)


def test_python_branch_on_a_traced_value_is_a_trace_error():
    def f(x):
        if x.sum() > 0:
            return x
        return -x
    with pytest.raises(j2s.TraceError, match="Python `if`"):
        j2s.convert(f, None, X)


def test_problems_inside_loops_and_branches_listed_at_once():
    def f(x):
        def step(c, v):
            return c + lax.erf_inv(v * 0.1), c            # erf_inv: no rule, inside a scan body
        c, _ = lax.scan(step, jnp.zeros(4), x)
        y = lax.cond(x.sum() > 0, lambda a: lax.bessel_i0e(a), lambda a: a, x)   # inside one branch
        z = lax.while_loop(lambda a: lax.lgamma(a)[0, 0] < 1.0, lambda a: a + 1.0, x)   # inside the condition
        return c, y, z
    with pytest.raises(j2s.UnsupportedPrimitiveError) as e:
        j2s.convert(f, None, X)
    assert set(e.value.primitives) == {"erf_inv", "bessel_i0e", "lgamma"}
    assert str(e.value).count("test_errors.py") == 3


def test_operator_shape_inference_failure_is_a_collected_problem():
    from jaxpr2sofie.lowering import Lowering
    from jaxpr2sofie.ir.graph import Graph
    from jaxpr2sofie.ir.ops.elementwise import Elementwise
    from jaxpr2sofie.values import Unsupported
    g = Graph("g")
    a, b = g.add_input("a", (2, 3), "float32"), g.add_input("b", (4, 5), "float32")
    with pytest.raises(Unsupported, match="Add: ValueError: add: shapes .* do not broadcast"):
        Lowering(g, HANDLERS).add(Elementwise.make("add", [a, b], "float32"))
    assert g.ops == []


def test_unexpected_primitive_parameter_is_reported():
    h = HANDLERS["tanh"]
    assert check_params(h, {"accuracy": None}) == set()
    assert check_params(h, {"accuracy": None, "new_knob": 3}) == {"new_knob"}


def test_duplicate_registration_refused():
    from jaxpr2sofie.primitives import handles
    with pytest.raises(RuntimeError, match="registered twice"):
        handles(lax.tanh_p)(lambda ctx, eqn, x: x)
    assert isinstance(HANDLERS["tanh"], Handler)


def test_unsupported_dtype():
    with pytest.raises(j2s.UnsupportedDtypeError, match="float16"):
        j2s.convert(lambda x: x * 2, None, X.astype(np.float16))


def test_empty_example_input():
    with pytest.raises(j2s.TraceError, match="example_input holds no arrays"):
        j2s.convert(lambda x: x, None, {})


@pytest.fixture(scope="module")
def compiled():
    m = j2s.convert(lambda p, x: jnp.tanh(x @ p), np.ones((4, 2), np.float32), X, name="Errs")
    return m.compile()


def test_wrong_input_shape(compiled):
    with pytest.raises(j2s.InputError, match=r"shape \(2, 4\).*converted for \(3, 4\)"):
        compiled(np.zeros((2, 4), np.float32))


def test_wrong_input_dtype(compiled):
    with pytest.raises(j2s.InputError, match="dtype int32.*expects float32.*astype"):
        compiled(X.astype(np.int32))


def test_float64_input_is_taken_as_float32(compiled):
    """As JAX takes a float64 array (without jax_enable_x64): the same numbers, in float32."""
    np.testing.assert_array_equal(compiled(X.astype(np.float64)), compiled(X))


def test_wrong_input_count(compiled):
    with pytest.raises(j2s.InputError, match="takes 1 input"):
        compiled(X, X)


def test_missing_compiler():
    m = j2s.convert(lambda x: x * 2, None, X)
    with pytest.raises(j2s.BuildError, match="compiler 'no-such-compiler-j2s' given by cxx= was not found"):
        m.compile(cxx="no-such-compiler-j2s")


def test_missing_compiler_in_cxx_is_an_error_not_a_fallback(monkeypatch):
    m = j2s.convert(lambda x: x * 3, None, X)
    monkeypatch.setenv("CXX", "/nonexistent/g++-j2s")
    with pytest.raises(j2s.BuildError, match="given by the CXX environment variable was not found.*unset CXX"):
        m.compile()


def test_no_compiler_at_all(monkeypatch):
    m = j2s.convert(lambda x: x * 4, None, X)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(j2s.BuildError, match="no C\\+\\+ compiler found.*apt-get install g\\+\\+"):
        m.compile()


def test_missing_blas(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy_openblas32", None)      # import fails
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(j2s.BuildError, match="no BLAS found: pip install scipy-openblas32"):
        build.find_blas()
    with pytest.raises(j2s.BuildError, match="not installed: pip install scipy-openblas32"):
        build.find_blas("scipy-openblas32")
    # a large product of two activations (no constant side to pack) is the one that needs BLAS
    big = j2s.convert(lambda p, x: x @ (x @ p).T, np.ones((64, 64), np.float32), np.ones((64, 64), np.float32),
                      name="NoBlas")
    with pytest.raises(j2s.BuildError, match="no BLAS"):
        big.compile()
    # a batch-1 sized product runs as plain loops: the header needs no BLAS, so none is looked for
    small = j2s.convert(lambda p, x: x @ p, np.ones((4, 2), np.float32), X, name="NoBlasNeeded")
    assert "sgemm" not in small.header().lower()
    np.testing.assert_allclose(small.compile()(X), X @ np.ones((4, 2), np.float32), rtol=1e-6)


def test_blas_none_needs_no_blas_at_any_size(monkeypatch):
    """convert(..., blas="none"): the products that would call BLAS use the header's own kernels,
    so it builds and runs with no BLAS anywhere (fixed and run-time batch)."""
    monkeypatch.setitem(sys.modules, "scipy_openblas32", None)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    p = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32) / 8
    x = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    fn = lambda p, x: x @ (x @ p).T   # noqa: E731  (64^3 multiply-adds between two activations)
    for batch in (None, "dynamic"):
        m = j2s.convert(fn, p, x, name="NoBlasAtAll", blas="none", batch=batch)
        assert "J2S_SGEMM" not in m.header() and "gemm_blas" not in m.header()
        np.testing.assert_allclose(m.compile()(x), fn(p, x), rtol=1e-4, atol=1e-4 * np.abs(fn(p, x)).max())
    with pytest.raises(ValueError, match="blas='openblas'.*\"none\""):
        j2s.convert(fn, p, x, blas="openblas")


def test_compile_error_is_reported_with_compiler_output():
    m = j2s.convert(lambda x: x * 2, None, X)
    with pytest.raises(j2s.BuildError, match="compiling the generated code failed"):
        m.compile(flags=["-std=c++17", "-DJ2S_BROKEN", "-include", "/nonexistent/header.h"])


@pytest.mark.parametrize("corrupt,message", [
    (lambda text: "", "truncated"),
    (lambda text: text[: len(text) // 2], "truncated"),
    (lambda text: text.replace("tensor_w", "tensor_other"), "another model"),
    (lambda text: text + "tensor_extra 1\n0\n", "data after the last tensor"),
    # the length on the tensor's line is one more than the model expects
    (lambda text: re.sub(r"tensor_w (\d+)", lambda m: f"tensor_w {int(m[1]) + 1}", text), "another model"),
])
def test_bad_weight_file(tmp_path, corrupt, message):
    m = j2s.convert(lambda p, x: x @ p["w"], {"w": np.arange(8, dtype=np.float32).reshape(4, 2)}, X, name="W")
    _, dat = m.generate(tmp_path)
    dat.write_text(corrupt(dat.read_text()))
    lib = build.compile_library(m.graph)
    with pytest.raises(j2s.WeightFileError, match=message):
        build.CompiledModel(m.graph, lib, dat)


def test_missing_weight_file(tmp_path):
    m = j2s.convert(lambda p, x: x @ p["w"], {"w": np.ones((4, 2), np.float32)}, X, name="W")
    with pytest.raises(j2s.WeightFileError, match="cannot open weight file"):
        build.CompiledModel(m.graph, build.compile_library(m.graph), tmp_path / "nope.dat")


def test_validate_reports_error_size():
    m = j2s.convert(jax.jit(lambda x: jnp.exp(x) * 3.0), None, X)
    v = m.validate(X)
    assert v.max_abs < 1e-5 and v.max_rel < 1e-6
    assert "max abs error" in str(v)


# ------------------------------------------------------------------ errors that name the parameter
P = {"w": np.ones((4, 2), np.float32), "b": np.zeros(2, np.float32)}


def dense(p, x):
    return x @ p["w"] + p["b"]


def test_a_params_dict_missing_a_key_names_the_key_the_line_and_the_fix():
    with pytest.raises(j2s.TraceError) as e:
        j2s.convert(dense, {"w": P["w"]}, X)
    msg = str(e.value)
    assert "'b'" in msg and "params has no entry 'b' (it holds 'w')" in msg, msg
    assert "test_errors.py:" in msg and "Add the array under 'b'" in msg, msg


def test_a_nested_params_dict_missing_a_key_names_its_path():
    p = {"layer1": dict(P), "layer2": {"w": np.ones((2, 2), np.float32)}}

    def f(p, x):
        h = x @ p["layer1"]["w"] + p["layer1"]["b"]
        return h @ p["layer2"]["w"] + p["layer2"]["b"]
    with pytest.raises(j2s.TraceError, match=r"params\['layer2'\] has no entry 'b'.*params\['layer1'\]\['b'\] exists"):
        j2s.convert(f, p, X)


def test_a_parameter_of_the_wrong_shape_names_its_path_and_both_shapes():
    with pytest.raises(j2s.TraceError) as e:
        j2s.convert(dense, {"w": np.ones((5, 2), np.float32), "b": P["b"]}, X)
    msg = str(e.value)
    assert "params['w']" in msg and "expected (4, 2), given (5, 2)" in msg and "test_errors.py:" in msg, msg
    with pytest.raises(j2s.TraceError, match=r"params\['b'\].*expected \(2,\), given \(3,\)"):
        j2s.convert(dense, {"w": P["w"], "b": np.zeros(3, np.float32)}, X)


def test_params_and_input_in_the_wrong_order_say_so():
    with pytest.raises(j2s.TraceError, match=r"swapped.*convert\(fn, params, example_input\)"):
        j2s.convert(dense, X, P)


def test_a_failure_that_is_not_about_params_passes_through_unchanged():
    def f(p, x):
        return x @ p["w"] @ np.ones((3, 3), np.float32)     # the constant is wrong, not the params
    with pytest.raises(TypeError, match="dot_general"):
        j2s.convert(f, P, X)


# ------------------------------------------------------------------ every problem, also downstream of another
def test_an_unsupported_primitive_fed_by_another_is_listed_with_its_line():
    def f(x):
        a = jnp.linalg.inv(x)        # lu, custom_linear_solve: no rules
        return jnp.fft.fft(a).real   # fft (inside a jitted jnp function) reads their result
    with pytest.raises(j2s.UnsupportedPrimitiveError) as e:
        j2s.convert(f, None, np.eye(4, dtype=np.float32) * 2)
    where = {prim: line for prim, _, line in e.value.problems}
    assert {"lu", "fft", "real"} <= set(where), e.value
    assert "test_errors.py:" in where["fft"] and where["fft"] != where["lu"], e.value
    assert "open an issue for a primitive without a conversion rule" in str(e.value)


def test_uint16_input_is_told_which_integer_types_are_supported():
    with pytest.raises(j2s.UnsupportedDtypeError) as e:
        j2s.convert(lambda x: x + 1, None, np.ones((2, 3), np.uint16))
    msg = str(e.value)
    assert "uint16" in msg and "int8, int16, int32, int64, uint8, uint32" in msg, msg
    assert "pass an integer type" not in msg.lower()


def test_a_parameter_held_in_a_local_is_not_blamed_for_another_operation():
    def f(p, x):
        w = p["w"]
        return (x @ w) @ np.ones((3, 3), np.float32)
    with pytest.raises(TypeError, match="dot_general"):
        j2s.convert(f, P, X)


def test_a_parameter_of_the_wrong_shape_inside_a_jitted_jnp_function_is_named_as_probable():
    """jnp.dot and jnp.matmul are jitted: the kernel reaches the failing product as a new tracer, so
    the one param of that shape and dtype is named, with the hedge it deserves."""
    for product in (jnp.dot, jnp.matmul):
        with pytest.raises(j2s.TraceError) as e:
            j2s.convert(lambda p, x: product(x, p["w"]), {"w": np.ones((5, 2), np.float32)}, X)
        msg = str(e.value)
        assert "params['w'] probably has the wrong shape (expected (4, 2), given (5, 2))" in msg, msg
        assert "test_errors.py:" in msg, msg
    with pytest.raises(TypeError, match="dot_general"):   # two params of that shape: no guess
        j2s.convert(lambda p, x: jnp.dot(x, p["w"]) + jnp.dot(x, p["v"]),
                    {"w": np.ones((5, 2), np.float32), "v": np.ones((5, 2), np.float32)}, X)
