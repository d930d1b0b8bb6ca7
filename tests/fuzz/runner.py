"""Run a batch of random programs as ONE converted function (one g++ build for many programs)."""
from __future__ import annotations

import inspect
from collections import Counter

import jax
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
# ... and, with a batch chosen at run time, an operator that needs a fixed one (a clear error)
DOCUMENTED_DYNAMIC = DOCUMENTED + ("batch size chosen at run time",)
# Open bugs with a skipped reproducer case (see `known_bug` in jaxpr2sofie/primitives/*.py CASES): none now.
KNOWN_BUGS = ()

# Figures of the whole run, printed by the terminal summary hook in tests/conftest.py.
STATS = Counter()
SKIPS = Counter()        # documented limitations met (UnsupportedPrimitiveError), by reason


def _batch_function(progs, events=None):
    """All programs as one function; with `events`, each program is vmapped over a leading event
    axis of its run-time inputs (a per-event model applied to a batch: batch="dynamic")."""
    fns = [p.function() for p in progs]
    counts = [sum(not a.weight for a in p.args) for p in progs]

    def batch(w, xs):
        outs, at = [], 0
        for k, (f, n) in enumerate(zip(fns, counts)):
            if events:
                outs.extend(jax.vmap(lambda *a, f=f, k=k: tuple(f(w[f"p{k}"], *a)))(*xs[at:at + n]))
            else:
                outs.extend(f(w[f"p{k}"], *xs[at:at + n]))
            at += n
        return tuple(outs)
    return batch


def _inputs(progs, seed, events=None):
    params, xs = {}, []
    for k, p in enumerate(progs):
        arrays = p.make_inputs(np.random.default_rng(seed + k))
        params[f"p{k}"] = {a.name: v for a, v in zip(p.args, arrays) if a.weight}
        if events:   # the run-time inputs of `events` events, each drawn like the first
            more = [p.make_inputs(np.random.default_rng(seed + k + 7919 * e)) for e in range(1, events)]
            arrays = [np.stack([a, *(m[j] for m in more)]) for j, a in enumerate(arrays)]
        xs.extend(v for a, v in zip(p.args, arrays) if not a.weight)
    return params, tuple(xs)


def convert_batch(progs, seed, events=None):
    params, xs = _inputs(progs, seed, events)
    return j2s.convert(_batch_function(progs, events), params, xs, name="Fuzz",
                       batch="dynamic" if events else None), xs


def _culprit(progs, seed):
    """The first program that fails to convert or build on its own (one build per program)."""
    for k, p in enumerate(progs):
        try:
            convert_batch([p], seed + k)[0].compile()
        except Exception as e:   # noqa: BLE001 - reported, not handled
            return f"{type(e).__name__}: {str(e)[-3000:]}\nseed {seed + k} {p.describe()}"
    return "none alone (only the batch fails)"


def check_batch(progs, seed, dynamic=False):
    """Convert, compile and compare every program of the batch; raise listing every mismatch.
    `dynamic`: each program vmapped over events, converted with batch="dynamic" (3 events),
    compared at 3 events and at 5."""
    events = 3 if dynamic else None
    if dynamic:   # a program without run-time inputs has no event axis to vmap over
        progs = [p for p in progs if any(not a.weight for a in p.args)]
        if not progs:
            return
    documented = DOCUMENTED_DYNAMIC if dynamic else DOCUMENTED
    try:
        model, xs = convert_batch(progs, seed, events)
    except UnsupportedPrimitiveError:
        # Find which programs hit a documented limitation, count them, and keep the others.
        kept = []
        for k, p in enumerate(progs):
            try:
                convert_batch([p], seed + k, events)
                kept.append(p)
            except UnsupportedPrimitiveError as e:
                for prim, reason, _ in e.problems:
                    known = any(k in reason for k in KNOWN_BUGS)
                    assert known or any(d in reason for d in documented), \
                        f"undocumented refusal {prim}: {reason}\nseed {seed + k} {p.describe()}"
                    SKIPS[f"{'open bug' if known else 'limitation'} {prim}: {reason}"] += 1
                STATS["skipped"] += 1
        if not kept:
            return
        # seeds follow the position in the batch: keep each program's own inputs
        progs = kept
        model, xs = convert_batch(progs, seed, events)
    try:
        compiled = model.compile()
    except Exception as e:
        raise AssertionError(f"{type(e).__name__} building the batch; the culprit: {_culprit(progs, seed)}") from e
    STATS["builds"] += 1
    _compare(progs, compiled, model, [np.asarray(v) for v in xs], seed)
    if dynamic:   # the same programs at another batch size
        _compare(progs, compiled, model, [np.asarray(v) for v in _inputs(progs, seed + 1, 5)[1]], seed + 1)


def _compare(progs, compiled, model, flat, seed):
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
