"""Convert -> compile -> compare with JAX, shared by every numerical test."""
from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest

import jaxpr2sofie as j2s


def slow_except(values, main):
    """Parameters for pytest.mark.parametrize: those in `main` run in the main command, the others
    are marked slow (the set .ci/run runs after it)."""
    return [v if v in main else pytest.param(v, marks=pytest.mark.slow) for v in values]


def require_tool(name, hint=""):
    """The path of the executable `name`. Missing: a skip on a developer's machine, a failure in CI
    (CI=true), where .ci/run installs every tool the README says the tests use."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not on PATH{': ' + hint if hint else ''}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a tool the suite uses must be installed, not skipped)")
    pytest.skip(message)


# A float reference whose values all lie within this many tolerances of zero proves nothing: any
# output near zero passes (an untrained BatchNorm stack, a flat softmax over many classes).
VANISHING = 100
# The scale of an output that is genuinely zero (every |reference| below it): order-1 intermediates
# that cancel leave float32 roundoff (~1e-7) where the reference has exact zeros, which a bound of
# rtol x 0 would reject. Only references the VANISHING check lets through can fall under it; for
# rtol <= 1e-4 the admitted error of any other output stays <= 1e-4 of its scale.
ZERO_SCALE = 1e-2


def assert_close(got, want, rtol=1e-5, what="", allow_vanishing=False):
    """The one tolerance rule of the suite, per output: max |got - want| <= rtol x scale, where
    scale = max |want| over the finite values (at least ZERO_SCALE). NaN and infinities must match
    where they are; ints and bools exactly. A float reference that vanishes (max |want| <=
    VANISHING x rtol) is refused unless `allow_vanishing` says the zeros are the point of the test."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != JAX {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != JAX {want.dtype}"
    if want.dtype.kind in "biu":
        bad = np.argwhere(np.atleast_1d(got != want))   # atleast_1d: argwhere of a 0-d array finds nothing
        assert bad.size == 0, f"{what}: {len(bad)} of {want.size} values differ, first at {tuple(bad[0])}: " \
                              f"{np.atleast_1d(got)[tuple(bad[0])]} != {np.atleast_1d(want)[tuple(bad[0])]}"
        return
    g, w = got.astype(np.float64), want.astype(np.float64)
    finite = np.abs(w[np.isfinite(w)])
    peak = finite.max(initial=0.0)
    if not allow_vanishing and want.size and finite.size == want.size and peak <= VANISHING * rtol:
        raise AssertionError(f"{what}: the JAX reference vanishes (max |value| {peak:.3g} <= "
                             f"{VANISHING} x rtol {rtol:g}): the comparison cannot fail. Use weights and inputs "
                             "that give outputs of order 1 (random normalisation statistics, logits rather than "
                             "a softmax over many classes), or pass allow_vanishing=True if zeros are the point.")
    same_nan = np.isnan(g) & np.isnan(w)
    same_inf = np.isinf(w) & (g == w)
    with np.errstate(invalid="ignore"):   # inf - inf: a NaN, made an infinite error below
        err = np.where(same_nan | same_inf, 0.0, np.abs(g - w))
    err = np.nan_to_num(err, nan=np.inf)
    bound = rtol * max(peak, ZERO_SCALE)
    bad = err > bound
    if bad.any():
        k = tuple(np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {w.size} values off; max abs err {err.max():.3g} > "
                             f"{bound:.3g} (rtol {rtol:g} x scale {max(peak, ZERO_SCALE):.3g}); "
                             f"first at {k}: C++ {g[k]!r} vs JAX {w[k]!r}")


def convert_and_check(fn, params, inputs, atol=1e-5, name="Case", extra_inputs=(), allow_vanishing=False,
                      batch=None, disable_passes=()):
    """Convert `fn` (fn(params, x) or fn(x) with params None) on example `inputs`, compile the C++,
    and compare with JAX on the example and on every pytree in `extra_inputs`. Returns the model."""
    m = j2s.convert(fn, params, inputs, name=name, batch=batch, disable_passes=disable_passes)
    compiled = m.compile()
    for x in (inputs, *extra_inputs):
        flat = [np.asarray(v) for v in jax.tree_util.tree_leaves(x)]
        got = jax.tree_util.tree_leaves(compiled(*flat))   # a dict output comes back as a dict
        compare_with_jax(m.traced, flat, got, atol, name, allow_vanishing)
    return m


def compare_with_jax(traced, flat, got, atol, name="Case", allow_vanishing=False):
    """Compare the C++ outputs with `jax.jit`; where they differ, with JAX run op by op too. When
    jit and op-by-op JAX disagree with each other (an XLA rewrite that changes the program, see
    Traced.reference_op_by_op), op-by-op is the reference; otherwise the jit failure stands."""
    want = traced.reference(*flat)
    assert len(got) == len(want)
    try:
        for k, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, atol, what=f"{name} output {k}", allow_vanishing=allow_vanishing)
    except AssertionError:
        by_op = traced.reference_op_by_op(*flat)
        try:
            for k, (w, o) in enumerate(zip(want, by_op)):
                assert_close(o, w, atol, what=f"{name} output {k}", allow_vanishing=True)
        except AssertionError:   # jit and op-by-op differ: the program's meaning is op by op
            for k, (g, o) in enumerate(zip(got, by_op)):
                assert_close(g, o, atol, what=f"{name} output {k} (vs JAX op by op)",
                             allow_vanishing=allow_vanishing)
            return
        raise


def run_case(case):
    if case.params is None:
        fn, params = (lambda xs: case.fn(*xs)), None
    else:
        fn, params = (lambda p, xs: case.fn(p, *xs)), case.params
    # a case with a run-time batch is checked at its example batch n and at 2n + 1
    extra = [tuple(np.concatenate([a, a[::-1], a[:1] * 0.5]) for a in case.inputs)] if case.batch else []
    return convert_and_check(fn, params, tuple(case.inputs), atol=case.atol, name="Case", extra_inputs=extra,
                             batch=case.batch)
