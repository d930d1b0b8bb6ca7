"""NaN, +-Inf, -0.0, denormals and huge values propagate through the generated code as through JAX,
family by family; and the default build flags keep IEEE semantics (no -ffast-math)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxpr2sofie.cpp.build import DEFAULT_FLAGS

from helpers import assert_close, convert_and_check

# every special value, twice, in a shape that pooling and softmax can use
SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-40, -1e-42, 3e38, -3e38, 1.0, -2.5, 0.5],
                   np.float32)
X = np.concatenate([SPECIAL, SPECIAL[::-1]]).reshape(4, 6)


def _check(fn, *inputs, atol=1e-5, signed_zeros=False, name="Special"):
    m = convert_and_check(lambda xs: fn(*xs), None, inputs, atol=atol, name=name, allow_vanishing=True)
    if signed_zeros:   # assert_close cannot see the sign of a zero: compare sign bits too
        flat = [np.asarray(v) for v in inputs]
        got, want = m.compile()(*flat), m.traced.reference(*flat)[0]
        number = ~np.isnan(want)        # a NaN's sign bit means nothing
        np.testing.assert_array_equal(np.signbit(got)[number], np.signbit(want)[number])
    return m


UNARY = {
    "exp": jnp.exp, "log": jnp.log, "sqrt": jnp.sqrt, "rsqrt": lax.rsqrt, "tanh": jnp.tanh,
    "logistic": jax.nn.sigmoid, "abs": jnp.abs, "neg": jnp.negative, "sign": jnp.sign, "floor": jnp.floor,
    "ceil": jnp.ceil, "round": jnp.round, "sin": jnp.sin, "cos": jnp.cos, "erf": jax.scipy.special.erf,
    "log1p": jnp.log1p, "expm1": jnp.expm1, "square": jnp.square, "exp2": jnp.exp2, "cbrt": jnp.cbrt,
    "relu": jax.nn.relu, "is_finite": jnp.isfinite, "isnan": jnp.isnan, "softplus": jax.nn.softplus,
    "integer_pow": lambda x: x ** 3, "atan": jnp.arctan, "sinh": jnp.sinh, "cosh": jnp.cosh,
}


_SIGNED_UNARY = ("neg", "abs", "floor", "ceil", "round", "sign", "square")


def test_unary():
    """Every unary function in one build (outputs in sorted-name order). Transcendentals of huge
    values differ in the last bits between std:: and XLA: the usual 1e-5 relative tolerance."""
    names = sorted(UNARY)
    m = _check(lambda x: tuple(UNARY[n](x) for n in names), X, name="Unary")
    got, want = m.compile()(X), m.traced.reference(X)
    for k, n in enumerate(names):
        if n in _SIGNED_UNARY:
            number = ~np.isnan(want[k])
            np.testing.assert_array_equal(np.signbit(got[k])[number], np.signbit(want[k])[number], err_msg=n)


BINARY = {
    "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": jnp.divide, "max": jnp.maximum,
    "min": jnp.minimum, "pow": jnp.power, "atan2": jnp.arctan2, "rem": jnp.fmod, "eq": jnp.equal,
    "ne": jnp.not_equal, "lt": jnp.less, "ge": jnp.greater_equal,
}


def test_binary_against_every_special_value():
    """x[i] op y[j] for every pair of special values and every binary operation, in one build."""
    names = sorted(BINARY)
    a = np.repeat(SPECIAL, SPECIAL.size).reshape(SPECIAL.size, SPECIAL.size)
    b = a.T.copy()
    m = _check(lambda x, y: tuple(BINARY[n](x, y) for n in names), a, b, name="Binary")
    got, want = m.compile()(a, b), m.traced.reference(a, b)
    for k, n in enumerate(names):
        if n in ("mul", "div", "max", "min", "sub"):
            number = ~np.isnan(want[k])
            np.testing.assert_array_equal(np.signbit(got[k])[number], np.signbit(want[k])[number], err_msg=n)


def test_select_and_clamp():
    _check(lambda x: jnp.where(x > 0, x, -x) + jnp.clip(x, -1.0, 1.0), X)


def test_division_by_signed_zero():
    _check(lambda x: 1.0 / (x * 0.0), X, signed_zeros=True)


@pytest.mark.parametrize("name, fn", [("sum", lambda x: x.sum(1)), ("max", lambda x: x.max(1)),
                                      ("min", lambda x: x.min(0)), ("prod", lambda x: x.prod(1)),
                                      ("mean", lambda x: x.mean(0)), ("argmax", lambda x: jnp.argmax(x, 1)),
                                      ("argmin", lambda x: jnp.argmin(x, 0)), ("cumsum", lambda x: jnp.cumsum(x, 1)),
                                      ("cummax", lambda x: lax.cummax(x, axis=1)),
                                      ("logsumexp", lambda x: jax.nn.logsumexp(x, axis=1))])
def test_reductions(name, fn):
    _check(fn, X)


def test_reductions_without_nan_rows():
    # rows holding only infinities, huge values and zeros of both signs
    x = np.array([[np.inf, -np.inf, 1.0], [3e38, 3e38, -0.0], [-0.0, -0.0, -0.0], [1e-40, -1e-40, 0.0]], np.float32)
    _check(lambda x: (x.sum(1), x.max(1), x.min(1), jnp.argmax(x, 1), x.prod(1)), x, name="SpecialRows")


@pytest.mark.parametrize("kind", ["max", "avg", "min"])
def test_pooling(kind):
    x = X.reshape(1, 4, 6, 1)
    if kind == "max":
        fn = lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "VALID")
    elif kind == "min":
        fn = lambda x: lax.reduce_window(x, jnp.inf, lax.min, (1, 2, 3, 1), (1, 1, 2, 1), "SAME")
    else:
        fn = lambda x: lax.reduce_window(x, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0
    _check(fn, x)


def test_softmax_rows_with_infinities():
    x = np.array([[0.0, -np.inf, 1.0, 2.0],           # -inf entries get probability 0
                  [-np.inf, -np.inf, -np.inf, -np.inf],  # all -inf: NaN, as in JAX
                  [np.inf, 1.0, 0.0, -1.0],            # +inf: NaN, as in JAX
                  [3e38, 3e38, -3e38, 0.0],            # huge values: shifted by the max, no overflow
                  [np.nan, 0.0, 1.0, 2.0]], np.float32)
    _check(lambda x: jax.nn.softmax(x, axis=-1), x)
    _check(lambda x: jax.nn.log_softmax(x, axis=-1), x, name="LogSoftmax")


def test_matmul_propagates_nan_and_inf():
    w = np.eye(6, dtype=np.float32)
    _check(lambda x: x @ w, X)


def test_denormals_flush_to_zero_as_in_xla():
    """XLA's CPU code reads denormals as zero and flushes denormal results (JAX shows it: 1e-40 * 0.5 + 1e-40
    is 0); run() computes in the same mode and restores the caller's mode afterwards."""
    x = np.array([1e-40, -1e-42, 1.4e-45, 2e-38], np.float32)   # the last one is normal (> FLT_MIN)
    m = _check(lambda x: (x * 0.5 + x, x == 0.0, jnp.log(x)), x, signed_zeros=False, name="Denormals")
    got = m.compile()(x)
    want = m.traced.reference(x)
    # exactly, zeros included (the last value: XLA may fuse x * 0.5 + x without a denormal in between)
    np.testing.assert_array_equal(got[0][:3], want[0][:3])
    np.testing.assert_array_equal(got[1], [True, True, True, False])
    assert np.all(np.isneginf(got[2][:3]))
    # the caller's mode is back after run(): NumPy, in this process, still sees denormals
    assert np.float32(1e-40) * np.float32(0.5) > 0


def test_default_flags_keep_ieee_semantics():
    bad = {"-ffast-math", "-Ofast", "-ffinite-math-only", "-fno-signed-zeros", "-funsafe-math-optimizations"}
    assert not bad & set(DEFAULT_FLAGS), DEFAULT_FLAGS
    # isnan / isfinite on NaN and infinities survive -O3 -march=native
    m = _check(lambda x: (jnp.isnan(x), jnp.isfinite(x), x != x), X, name="IeeeFlags")
    got = m.compile()(X)
    np.testing.assert_array_equal(got[0], np.isnan(X))


@pytest.mark.parametrize("fn,kernel", [(jnp.exp, "vm_exp_n"), (jnp.tanh, "vm_tanh_n"),
                                       (jax.nn.sigmoid, "vm_sigmoid_n")])
def test_vector_math_across_the_float_range(fn, kernel):
    """exp, tanh and logistic of float32 run through the branch-free vector versions (vmath.py).
    Across the range (both sides of tanh's series/quotient switch at 0.625, overflow and underflow,
    a length that leaves a tail after the last whole vector) they match XLA to 2e-6 relative, keep
    the sign of zero, and give NaN/inf/limits where XLA does."""
    x = np.concatenate([np.linspace(-110, 110, 4001), np.linspace(-0.7, 0.7, 1001), np.geomspace(1e-30, 1, 200),
                        -np.geomspace(1e-30, 1, 200), SPECIAL]).astype(np.float32)[None, :]
    assert x.shape[1] % 8 != 0
    m = _check(fn, x, atol=2e-6, signed_zeros=True, name="VectorMath")
    assert f"detail::{kernel}(" in m.header()
    got, want = m.compile()(x), m.traced.reference(x)[0]
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-37)
