"""Run a batch of random programs as ONE converted function (one g++ build for many programs)."""
from __future__ import annotations

import inspect
from collections import Counter

import numpy as np

import jaxpr2sofie as j2s
from jaxpr2sofie.errors import UnsupportedPrimitiveError

from helpers import assert_close

# Random programs legitimately compute all-zero outputs (a sum over an empty axis, relu of a
# negative input): where the shared helper refuses a vanishing reference, the fuzzer opts out.
# That the comparison can fail is shown by the many non-vanishing programs of every batch.
_CLOSE = {"allow_vanishing": True} if "allow_vanishing" in inspect.signature(assert_close).parameters else {}

# Refusals the converter documents (the generator avoids them; the few it makes are counted).
DOCUMENTED = ("data-dependent offset", "computed at run time", "run-time size")
# Open bugs with a skipped reproducer case (see `known_bug` in jaxpr2sofie/primitives/*.py CASES): none now.
KNOWN_BUGS = ()

# Figures of the whole run, printed by the terminal summary hook in tests/conftest.py.
STATS = Counter()
SKIPS = Counter()        # documented limitations met (UnsupportedPrimitiveError), by reason


def _batch_function(progs):
    fns = [p.function() for p in progs]
    counts = [sum(not a.weight for a in p.args) for p in progs]

    def batch(w, xs):
        outs, at = [], 0
        for k, (f, n) in enumerate(zip(fns, counts)):
            outs.extend(f(w[f"p{k}"], *xs[at:at + n]))
            at += n
        return tuple(outs)
    return batch


def _inputs(progs, seed):
    params, xs = {}, []
    for k, p in enumerate(progs):
        arrays = p.make_inputs(np.random.default_rng(seed + k))
        params[f"p{k}"] = {a.name: v for a, v in zip(p.args, arrays) if a.weight}
        xs.extend(v for a, v in zip(p.args, arrays) if not a.weight)
    return params, tuple(xs)


def convert_batch(progs, seed):
    params, xs = _inputs(progs, seed)
    return j2s.convert(_batch_function(progs), params, xs, name="Fuzz"), xs


def _culprit(progs, seed):
    """The first program that fails to convert or build on its own (one build per program)."""
    for k, p in enumerate(progs):
        try:
            convert_batch([p], seed + k)[0].compile()
        except Exception as e:   # noqa: BLE001 - reported, not handled
            return f"{type(e).__name__}: {str(e)[-3000:]}\nseed {seed + k} {p.describe()}"
    return "none alone (only the batch fails)"


def check_batch(progs, seed):
    """Convert, compile and compare every program of the batch; raise listing every mismatch."""
    try:
        model, xs = convert_batch(progs, seed)
    except UnsupportedPrimitiveError:
        # Find which programs hit a documented limitation, count them, and keep the others.
        kept = []
        for k, p in enumerate(progs):
            try:
                convert_batch([p], seed + k)
                kept.append(p)
            except UnsupportedPrimitiveError as e:
                for prim, reason, _ in e.problems:
                    known = any(k in reason for k in KNOWN_BUGS)
                    assert known or any(d in reason for d in DOCUMENTED), \
                        f"undocumented refusal {prim}: {reason}\nseed {seed + k} {p.describe()}"
                    SKIPS[f"{'open bug' if known else 'limitation'} {prim}: {reason}"] += 1
                STATS["skipped"] += 1
        if not kept:
            return
        # seeds follow the position in the batch: keep each program's own inputs
        progs = kept
        model, xs = convert_batch(progs, seed)
    try:
        compiled = model.compile()
    except Exception as e:
        raise AssertionError(f"{type(e).__name__} building the batch; the culprit: {_culprit(progs, seed)}") from e
    STATS["builds"] += 1
    flat = [np.asarray(v) for v in xs]
    got = compiled(*flat)
    got = list(got) if isinstance(got, tuple) else [got]
    want = model.traced.reference(*flat)
    failures, at = [], 0
    for k, p in enumerate(progs):
        STATS["programs"] += 1
        STATS[f"programs[{p.family}]"] += 1
        for j in range(len(p.outputs)):
            g, wnt = got[at + j], want[at + j]
            try:
                assert_close(g, wnt, p.atol, what=f"output {p.outputs[j]}", **_CLOSE)
            except AssertionError as e:
                failures.append(f"{e}\nseed {seed + k} (np.random.default_rng) {p.describe()}")
                STATS["mismatches"] += 1
                break
        at += len(p.outputs)
    assert not failures, f"{len(failures)} of {len(progs)} programs differ from JAX:\n\n" + "\n\n".join(failures)
