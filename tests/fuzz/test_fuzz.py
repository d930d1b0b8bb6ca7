"""Differential fuzzing: random well-typed JAX programs, converted, compiled and compared with JAX.

Programs are grouped in batches: one converted function with several outputs per batch, so one
g++ build checks many programs. The default run is short and derandomized (same programs every
time); `pytest tests/fuzz --fuzz-long` runs thousands. A failure prints each differing program's
source, input specs and seed: make it a Case beside its rule in jaxpr2sofie/primitives/.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzz_programs import FAMILIES
from runner import check_batch

BATCH = 24   # programs per build: one g++ build (~3 s fixed cost) and one XLA compile for all of them
# batches per family: (default, --fuzz-long)
BUDGET = {"elementwise": (2, 20), "int": (1, 10), "movement": (1, 12), "reduce": (2, 16), "mixed": (3, 30),
          "dot_general": (1, 10), "conv": (2, 16), "pool": (1, 12), "gather": (1, 10), "control": (2, 20)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_random_programs_match_jax(family, request):
    long = request.config.getoption("--fuzz-long")
    batches = BUDGET[family][1 if long else 0]

    @settings(max_examples=batches, derandomize=not long, database=None, deadline=None,
              phases=(Phase.explicit, Phase.generate),   # shrinking would cost a g++ build per step
              suppress_health_check=list(HealthCheck))
    @given(st.lists(FAMILIES[family](), min_size=BATCH, max_size=BATCH), st.integers(0, 2 ** 31 - BATCH))
    def run(progs, seed):
        check_batch(progs, seed)

    run()


# The same families with a batch chosen at run time: every program vmapped over events, converted
# with batch="dynamic", checked at two batch sizes (batches per family: default, --fuzz-long).
BUDGET_DYNAMIC = {"elementwise": (1, 6), "int": (1, 4), "movement": (1, 6), "reduce": (1, 6), "mixed": (1, 10),
                  "dot_general": (1, 4), "conv": (1, 6), "pool": (1, 4), "gather": (1, 4), "control": (1, 6)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_random_programs_at_a_run_time_batch_match_jax(family, request):
    long = request.config.getoption("--fuzz-long")

    @settings(max_examples=BUDGET_DYNAMIC[family][1 if long else 0], derandomize=not long, database=None,
              deadline=None, phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
    @given(st.lists(FAMILIES[family](), min_size=BATCH, max_size=BATCH), st.integers(0, 2 ** 31 - BATCH))
    def run(progs, seed):
        check_batch(progs, seed, dynamic=True)

    run()
