"""Run a batch of random programs as ONE converted function (one g++ build for many programs).

Each program gets one verdict, counted once per family and mode (a run-time-batch program is
checked at two batch sizes but counted once):
- compared: C++ matches JAX (jax.jit, or op-by-op JAX where the two disagree);
- xla_jit_differs: jax.jit and op-by-op JAX disagree and the C++ matches op-by-op JAX (an XLA
  miscompile, openxla/xla#49121; counted, not a failure -- also counted in `compared`);
- tie: the C++ differs from JAX, but gives what JAX gives when the continuous inputs move by
  ~1e-6 (a discrete result -- an argmax, a sort order, a comparison -- sitting on a tie); not a
  failure;
- ill_conditioned: the C++ and JAX differ by more than the tolerance, but the program computed in
  float64 shows JAX's own float32 result is as far from the exact value (within a factor 2) as
  the C++ one is (the sine of a product of twenty numbers, say: any float32 evaluation order
  changes it by that much); every output must be a float; not a failure;
- refused: the converter refuses it with a documented limitation;
- skipped: a run-time-batch program without a run-time input (nothing to batch);
- mismatch: anything else -- the test fails, printing each program's source and draw key.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import jax
import numpy as np

import jaxpr2sofie as j2s
from jaxpr2sofie.errors import UnsupportedPrimitiveError

from helpers import assert_close

# Refusals the converter documents (the generator avoids them; the few it makes are counted).
DOCUMENTED = ("data-dependent offset", "computed at run time", "run-time size")
# ... and, with a batch chosen at run time, an operator that needs a fixed one (a clear error), and
# the reshape-with-`dimensions` that jax.vmap makes of a convolution whose dimension numbers put
# the batch and feature axes apart (seen only since the fuzzer draws such layouts: a clear
# refusal, not a wrong answer; a gap for the conv rules to close)
DOCUMENTED_DYNAMIC = DOCUMENTED + ("batch size chosen at run time", "reshape with a `dimensions` permutation")
# Open bugs with a skipped reproducer case (see `known_bug` in the cases of tests/primitive_cases/): none now.
KNOWN_BUGS = ()
PERTURBATION = 1e-6   # relative move of the continuous inputs that must not change a discrete result

# Figures of the whole run, printed by the terminal summary hook in tests/conftest.py:
# FAMILY_STATS[(family, mode)] counts verdicts of distinct programs; COVERED the primitives applied.
FAMILY_STATS = defaultdict(Counter)
COVERED = defaultdict(Counter)
SKIPS = Counter()        # documented limitations met (UnsupportedPrimitiveError), by reason
STATS = Counter()        # builds


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


def check_batch(family, progs, seed, dynamic=False):
    """Convert, compile and compare every program of the batch; raise listing every mismatch.
    `dynamic`: each program vmapped over events, converted with batch="dynamic" (3 events),
    compared at 3 events and at 5."""
    stats = FAMILY_STATS[(family, "run-time batch" if dynamic else "static")]
    for p in progs:
        assert p.family == family and p.applied, f"not a {family} program: {p.describe()}"
        COVERED[family].update(p.applied)
    events = 3 if dynamic else None
    if dynamic:   # a program without run-time inputs has no event axis to vmap over
        stats["skipped"] += sum(not any(not a.weight for a in p.args) for p in progs)
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
                stats["refused"] += 1
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
    verdicts = _compare(progs, compiled, model, [np.asarray(v) for v in xs], seed, dynamic)
    if dynamic:   # the same programs at another batch size; the worse verdict of the two counts
        again = _compare(progs, compiled, model, [np.asarray(v) for v in _inputs(progs, seed + 1, 5)[1]], seed + 1,
                         dynamic)
        order = ("compared", "xla_jit_differs", "tie", "ill_conditioned", "mismatch")
        verdicts = [max(a, b, key=lambda v: order.index(v[0])) for a, b in zip(verdicts, again)]
    failures = []
    for kind, message in verdicts:
        stats[kind] += 1
        stats["compared"] += kind == "xla_jit_differs"
        if kind == "mismatch":
            failures.append(message)
    assert not failures, f"{len(failures)} of {len(progs)} programs differ from JAX:\n\n" + "\n\n".join(failures)


def _split(progs, flat):
    """Per program, its slice of a flat list of outputs."""
    at, out = 0, []
    for p in progs:
        out.append(flat[at:at + len(p.outputs)])
        at += len(p.outputs)
    return out


def _differs(progs, got, want, allow_vanishing=True):
    """Per program, the first assert_close message between two flat output lists (None: close)."""
    res = []
    for p, gs, ws in zip(progs, _split(progs, got), _split(progs, want)):
        msg = None
        for name, g, w in zip(p.outputs, gs, ws):
            try:
                assert_close(g, w, p.atol, what=f"output {name}", allow_vanishing=allow_vanishing)
            except AssertionError as e:
                msg = str(e)
                break
        res.append(msg)
    return res


def _perturbed(progs, flat, rng):
    """The run-time inputs with every continuous ("f") input moved by ~PERTURBATION (relative);
    grid, int and bool inputs, whose ties are exact and must match, stay as they are."""
    kinds = [a.kind[0] for p in progs for a in p.args if not a.weight]
    return [x * (1 + PERTURBATION * rng.uniform(-1, 1, x.shape)).astype(x.dtype) if k == "f" else x
            for k, x in zip(kinds, flat)]


def _float64_outputs(progs, model, flat, events=False) -> list:
    """Per program, its outputs computed in float64 (float32 weights and inputs widened, with
    jax_enable_x64), or None where the program cannot run so (integer arithmetic that mixes the
    int64 x64 gives with int32): the exact values float32 results are judged against when the C++
    and JAX disagree."""
    def wide(a):
        a = np.asarray(a)
        return a.astype(np.float64) if a.dtype == np.float32 else a
    weights = defaultdict(dict)
    for label, v in zip(model.traced.param_labels, model.traced.param_values):
        k, _, name = label.partition(".")
        weights[k][name] = wide(v)
    outs, at = [], 0
    for k, p in enumerate(progs):
        n = sum(not a.weight for a in p.args)
        xs, at = [wide(x) for x in flat[at:at + n]], at + n
        f, w = p.function(), weights[f"p{k}"]
        try:
            with jax.enable_x64(True):
                ys = jax.vmap(lambda *a: tuple(f(w, *a)))(*xs) if events else f(w, *xs)
                outs.append([np.asarray(y) for y in ys])
        except (TypeError, ValueError):
            outs.append(None)
    return outs


def _no_farther_from_exact(progs, got, want, exact) -> list:
    """Per program: every output is a float and the C++ is no farther from the float64 value than
    twice JAX's float32 distance from it (NaN and infinities where JAX has them)."""
    res = []
    for gs, ws, es in zip(_split(progs, got), _split(progs, want), exact):
        ok = es is not None
        if not ok:
            res.append(False)
            continue
        for g, w, e in zip(gs, ws, es):
            g, w, e = (np.asarray(v, np.float64) for v in (g, w, e))
            if np.asarray(w).dtype.kind != "f" or not np.array_equal(np.isfinite(g), np.isfinite(w)):
                ok = False
                break
            fin = np.isfinite(w)
            err_g = np.max(np.abs(g[fin] - e[fin]), initial=0.0)
            err_w = np.max(np.abs(w[fin] - e[fin]), initial=0.0)
            ok = ok and err_g <= 2 * err_w
        res.append(ok)
    return res


def _compare(progs, compiled, model, flat, seed, dynamic=False):
    """A (verdict, message) per program: compared, xla_jit_differs, tie or mismatch."""
    got = compiled(*flat)
    got = list(got) if isinstance(got, tuple) else [got]
    want = model.traced.reference(*flat)
    vs_jit = _differs(progs, got, want)
    if not any(vs_jit):
        return [("compared", None)] * len(progs)
    by_op = model.traced.reference_op_by_op(*flat)
    jit_vs_op = _differs(progs, want, by_op)
    vs_op = _differs(progs, got, by_op)
    rng = np.random.default_rng(seed)
    # a tie: the C++ gives what JAX gives at an input ~1e-6 away (the discrete choice flipped there)
    moved = [_differs(progs, got, model.traced.reference_op_by_op(*_perturbed(progs, flat, rng)))
             for _ in range(4)]
    conditioned = _no_farther_from_exact(progs, got, by_op, _float64_outputs(progs, model, flat, dynamic))
    verdicts = []
    for k, p in enumerate(progs):
        if vs_jit[k] is None:
            verdicts.append(("compared", None))
        elif jit_vs_op[k] is not None and vs_op[k] is None:
            verdicts.append(("xla_jit_differs", None))
        elif any(m[k] is None for m in moved):
            verdicts.append(("tie", None))
        elif conditioned[k]:
            verdicts.append(("ill_conditioned", None))
        else:
            why = vs_op[k] if jit_vs_op[k] is not None else vs_jit[k]
            ref = "op-by-op JAX (jax.jit differs from it too)" if jit_vs_op[k] is not None else "jax.jit"
            verdicts.append(("mismatch", f"vs {ref}: {why}\ninput seed {seed + k} (np.random.default_rng) "
                                         f"{p.describe()}"))
    return verdicts
