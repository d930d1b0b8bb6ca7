"""Differential fuzzing: random well-typed JAX programs, converted, compiled and compared with JAX.

Programs are grouped in batches: one converted function with several outputs per batch, so one
g++ build checks many programs. Every program is drawn from a numpy Generator keyed by
(seed, family, stream, index): the default run uses seed 0 (the same programs every time, and each
as random as any other -- there is no "simplest example first"); `--fuzz-seed N` draws others and
`--fuzz-long` runs thousands. Each program applies its family's primitive to more than one element
and is distinct from every other program of the run (families.py). A failure prints each differing
program's source, input seed and draw key: make it a Case in its family's module of tests/primitive_cases/.
"""
from __future__ import annotations

import numpy as np
import pytest

import jaxpr2sofie as j2s

from families import FAMILIES, Drawer
from helpers import slow_except
from runner import _batch_function, _compare, _differs, check_batch
from sofie_leg import check_batch_through_sofie

# Programs per build: one g++ build (~3 s fixed cost) and one XLA compile for all of them. The
# default run makes one build per family and mode: 24 programs each at a fixed batch, 12 at a
# run-time batch (vmapped loops and scatters make large headers: ~55 s of g++ for 24 `slices`
# programs), 432 distinct programs in all; --fuzz-long 24 per build, about 6,400 programs.
BATCH, BATCH_DYNAMIC = 24, (12, 24)
# batches per family: (default, --fuzz-long)
BUDGET = {"elementwise": (1, 20), "int": (1, 10), "movement": (1, 12), "reduce": (1, 16), "mixed": (1, 30),
          "dot_general": (1, 10), "conv": (1, 16), "pool": (1, 12), "gather": (1, 10), "control": (1, 20),
          "slices": (1, 24), "sort": (1, 12)}
# The same families with a batch chosen at run time: every program vmapped over events, converted
# with batch="dynamic", checked at two batch sizes.
BUDGET_DYNAMIC = {"elementwise": (1, 6), "int": (1, 4), "movement": (1, 6), "reduce": (1, 6), "mixed": (1, 10),
                  "dot_general": (1, 4), "conv": (1, 6), "pool": (1, 4), "gather": (1, 4), "control": (1, 8),
                  "slices": (1, 12), "sort": (1, 6)}


# The main command (ten minutes on two cores) runs every family at a fixed batch; at a run-time batch
# and through real SOFIE it runs the families closest to the silent wrong answers found so far
# (run-time slices, control flow, mixed programs, convolutions), the others in the slow set, which
# .ci/run runs after it: CI checks every family in every mode.
MAIN_DYNAMIC, MAIN_SOFIE = ("slices", "control", "mixed"), ("slices", "mixed", "conv")

def _run(family, request, budget, dynamic):
    long = request.config.getoption("--fuzz-long")
    seed = request.config.getoption("--fuzz-seed")
    drawer = Drawer(family, seed, stream=int(dynamic))
    size = BATCH_DYNAMIC[long] if dynamic else BATCH
    for b in range(budget[family][1 if long else 0]):
        check_batch(family, drawer.batch(size), seed * 7919 + 1000 * b, dynamic=dynamic)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_random_programs_match_jax(family, request):
    _run(family, request, BUDGET, dynamic=False)


@pytest.mark.parametrize("family", slow_except(FAMILIES, MAIN_DYNAMIC))
def test_random_programs_at_a_run_time_batch_match_jax(family, request):
    _run(family, request, BUDGET_DYNAMIC, dynamic=True)


@pytest.mark.parametrize("family", slow_except(FAMILIES, MAIN_SOFIE))
# at a run-time batch in the slow set (CI runs it after the main command), as the main command has a ten-minute budget
@pytest.mark.parametrize("dynamic", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["static", "run-time batch"])
def test_random_programs_through_real_sofie(family, dynamic, request):
    """The same programs through real SOFIE (sofie_leg.py): those it takes match JAX."""
    long = request.config.getoption("--fuzz-long")
    seed = request.config.getoption("--fuzz-seed")
    drawer = Drawer(family, seed, stream=int(dynamic))
    budget = (BUDGET_DYNAMIC if dynamic else BUDGET)[family][1 if long else 0]
    for b in range(budget):
        check_batch_through_sofie(family, drawer.batch(BATCH_DYNAMIC[long] if dynamic else BATCH),
                                  seed * 7919 + 1000 * b, dynamic=dynamic)


# ------------------------------------------------------------------ the verdicts, without a C++ build
def _one_program(source, shape):
    from fuzz_programs import Arg, Program
    prog = Program("sort", source, [Arg("a0", shape, "float32", ("f",))], ["v0"])
    return prog, j2s.convert(_batch_function([prog]), {"p0": {}}, (np.zeros(shape, np.float32),), name="Fuzz")


def test_verdicts_tell_ties_and_xla_miscompiles_from_mismatches():
    """A discrete result that flips under a 1e-6 move of the input is a tie; one that does not is a
    mismatch; a result that matches op-by-op JAX where jax.jit differs is xla_jit_differs."""
    prog, model = _one_program("def p(w, a0):\n    v0 = jnp.argmax(a0)\n    return (v0,)\n", (2,))
    flip = lambda *xs: np.int32(1 - int(np.argmax(xs[0])))   # noqa: E731 - a C++ that picks the other index
    assert _compare([prog], flip, model, [np.array([0.5, 0.5 + 3e-8], np.float32)], 0) == [("tie", None)]
    assert _compare([prog], flip, model, [np.array([0.1, 0.9], np.float32)], 0)[0][0] == "mismatch"
    # issue 21's first reproducer: XLA folds the two dynamic slices without clamping the outer start
    src = ("def p(w, a0):\n    z = a0 * 1.3\n    i = jnp.argmax(jnp.sum(z.reshape(6, -1), axis=1))\n"
           "    a = lax.dynamic_slice_in_dim(z, i, 4, axis=0)\n    j = jnp.argmax(jnp.sum(a.reshape(4, -1), axis=1))\n"
           "    v0 = lax.dynamic_slice_in_dim(a, j, 2, axis=0)\n    return (v0,)\n")
    prog, model = _one_program(src, (6, 6, 1, 3))
    for s in range(12):   # the first input whose first start is clamped
        x = np.random.default_rng(s).standard_normal((6, 6, 1, 3)).astype(np.float32)
        if np.argmax(np.sum(x.reshape(6, -1), axis=1)) > 2:
            break
    by_op = model.traced.reference_op_by_op(x)
    verdict = _compare([prog], lambda *xs: by_op[0], model, [x], 0)
    assert verdict == [("xla_jit_differs" if _differs([prog], model.traced.reference(x), by_op)[0] else "compared",
                        None)]


def test_an_ill_conditioned_program_is_told_from_a_wrong_answer():
    """sin of the product of many numbers: any float32 evaluation order moves it by ~1e-4. A C++
    result no farther than twice JAX's float32 distance from the float64 value is ill_conditioned;
    one farther than that is still a mismatch."""
    src = "def p(w, a0):\n    v0 = lax.sin(jnp.prod(jnp.tanh(a0) * 0.5 + 1.0)) + 0.5\n    return (v0,)\n"
    prog, model = _one_program(src, (24,))
    x = np.random.default_rng(3).uniform(1, 3, 24).astype(np.float32)
    exact = np.sin(np.prod(np.tanh(x.astype(np.float64)) * 0.5 + 1.0)) + 0.5
    jax_err = abs(float(model.traced.reference(x)[0]) - exact)
    near = np.float32(exact + 1.5 * max(jax_err, 1e-6))    # as far off as float32 rounding makes it
    far = np.float32(exact + 0.05)                          # a wrong answer
    assert abs(float(near) - exact) <= 2 * max(jax_err, 1e-6)
    assert _compare([prog], lambda *xs: near, model, [x], 0)[0][0] in ("compared", "tie", "ill_conditioned")
    assert _compare([prog], lambda *xs: far, model, [x], 0)[0][0] == "mismatch"


def test_a_typo_in_a_generator_fails_loudly():
    """Only JAX's own type and shape checks reject a step; a misspelt function or keyword raises."""
    from fuzz_programs import Builder
    b = Builder(np.random.default_rng(0), "pool")
    x = b.fresh((3, 4), "float32", weight=False, view=False)
    assert b.emit(f"lax.add({x.name}, jnp.zeros(7))") is None   # ill-typed: not taken
    with pytest.raises(AttributeError):
        b.emit(f"lax.reduce_windw({x.name}, 0.0, lax.add, (1, 2), (1, 1), 'VALID')")
    with pytest.raises(TypeError, match="unexpected keyword"):
        b.emit(f"lax.reduce_window({x.name}, 0.0, lax.add, (1, 2), (1, 1), 'VALID', window_dilaton=(1, 1))")
    assert b.emit(f"lax.reduce_window({x.name}, 0.0, lax.add, (1, 2), (1, 1), 'VALID')").shape == (3, 3)
