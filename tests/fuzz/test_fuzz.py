"""Differential fuzzing: random well-typed JAX programs, converted, compiled and compared with JAX.

Programs are grouped in batches: one converted function with several outputs per batch, so one
g++ build checks many programs. Every program is drawn from a numpy Generator keyed by
(seed, family, stream, index): the default run uses seed 0 (the same programs every time, and each
as random as any other -- there is no "simplest example first"); `--fuzz-seed N` draws others and
`--fuzz-long` runs thousands. Each program applies its family's primitive to more than one element
and is distinct from every other program of the run (families.py). A failure prints each differing
program's source, input seed and draw key: make it a Case beside its rule in jaxpr2sofie/primitives/.
"""
from __future__ import annotations

import pytest

from families import FAMILIES, Drawer
from runner import check_batch

BATCH = 24   # programs per build: one g++ build (~3 s fixed cost) and one XLA compile for all of them
# batches per family: (default, --fuzz-long)
BUDGET = {"elementwise": (2, 20), "int": (1, 10), "movement": (1, 12), "reduce": (2, 16), "mixed": (2, 30),
          "dot_general": (1, 10), "conv": (2, 16), "pool": (1, 12), "gather": (1, 10), "control": (2, 20),
          "slices": (1, 24), "sort": (1, 12)}
# The same families with a batch chosen at run time: every program vmapped over events, converted
# with batch="dynamic", checked at two batch sizes.
BUDGET_DYNAMIC = {"elementwise": (1, 6), "int": (1, 4), "movement": (1, 6), "reduce": (1, 6), "mixed": (1, 10),
                  "dot_general": (1, 4), "conv": (1, 6), "pool": (1, 4), "gather": (1, 4), "control": (1, 8),
                  "slices": (1, 12), "sort": (1, 6)}


def _run(family, request, budget, dynamic):
    long = request.config.getoption("--fuzz-long")
    seed = request.config.getoption("--fuzz-seed")
    drawer = Drawer(family, seed, stream=int(dynamic))
    for b in range(budget[family][1 if long else 0]):
        check_batch(family, drawer.batch(BATCH), seed * 7919 + 1000 * b, dynamic=dynamic)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_random_programs_match_jax(family, request):
    _run(family, request, BUDGET, dynamic=False)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_random_programs_at_a_run_time_batch_match_jax(family, request):
    _run(family, request, BUDGET_DYNAMIC, dynamic=True)
