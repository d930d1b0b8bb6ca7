"""The fuzzer's leg through real SOFIE (the `sofie` package): the same random programs, handed to
SOFIE (its ONNX parser reading the export made for it, `to_onnx(target="sofie")`: route="onnx"; the
operators route has its own fuzz test in tests/test_sofie_operators.py), SOFIE's header
compiled and compared with JAX under the same verdicts as ours (runner._compare).

A program SOFIE cannot express is counted by SOFIE's reason, once per program: each one is asked
on its own first (convert, export, parse, generate: no compiler, ~10 ms), then the ones SOFIE
takes are built together in one g++ call. A reason not in SOFIE_LIMITS fails the test: a new
SOFIE behaviour is either avoided in the export (onnx.SOFIE_TRAPS, with a test in
tests/test_sofie_traps_found.py) or added here with what it is.
"""
from __future__ import annotations

import numpy as np

from jaxpr2sofie import sofie_backend
from jaxpr2sofie.errors import BuildError, UnsupportedPrimitiveError

from runner import FAMILY_STATS, SKIPS, _compare, convert_batch

# SOFIE's refusals met by the fuzzer, matched in its message: what each one is.
SOFIE_LIMITS = {
    "is not yet supported": "an ONNX operator SOFIE's parser lacks (Sign, Sinh, Tan, Round, GatherElements, Loop...)",
    "does not yet support input type": "an integer or bool input SOFIE's operator lacks (Add on int32, Pad on int32)",
    "unsupported input type": "an integer input SOFIE's CumSum lacks",
    "called to Generate without being initialized first": "SOFIE skips initialising an operator whose output is a "
                                                         "0-d tensor (a reduction to a scalar, a comparison of scalars)",
    "Conv Transpose not yet supported": "a 3-D transposed convolution",
    "is not of 3,4 or 5 dimensions": "a pooling window over a rank SOFIE's Pool lacks",
    "error: ‘inf’ was not declared": "SOFIE writes a -inf Pad value as `-inf`, not C++ (SOFIE_TRAPS)",
    "error: ‘end_": "SOFIE's Slice with run-time starts (a dynamic_slice) reads start_/end_ variables it never "
                        "declares (the header does not compile)",
    "error: redefinition of": "SOFIE declares the tensors of an If's branches twice (the header does not compile)",
    "only the batch (first) dimension": "a pool over a tensor whose run-time dimension is not the first (SOFIE's "
                                        "Pool takes the batch first only)",
    "ValueError: stoi": "SOFIE's ONNX parser fails converting a size (std::stoi) of some models at a run-time "
                        "batch (a dot_general of a sliced input, a reduction of a product): cause not isolated",
    "cannot be exported to ONNX": "an operator without an ONNX form (no SOFIE form either)",
    "a size fixed at conversion time is needed": "an operator the ONNX export writes only at a fixed batch (ours)",
}


def _sofie_takes(model) -> str:
    """Why SOFIE cannot generate code for `model` ("" when it can)."""
    import sofie
    try:
        sofie_backend.to_rmodel(model, route="onnx").generate(sofie.Options(0))
    except Exception as e:   # noqa: BLE001 - SOFIE's errors are plain RuntimeErrors
        return f"{type(e).__name__}: {e}"
    return ""


def _known(reason: str) -> str | None:
    return next((k for k in SOFIE_LIMITS if k in reason), None)


def _compiling(progs, seed, events, stats) -> list:
    """The programs whose SOFIE code compiles (one build each); the others counted by the known
    reason in the compiler's message, or the test fails with it."""
    kept, new = [], []
    for k, p in enumerate(progs):
        try:
            convert_batch([p], seed + k, events)[0].compile_sofie(route="onnx")
            kept.append(p)
        except BuildError as e:
            known = _known(str(e))
            if known is None:
                new.append(str(e)[-1500:] + f"\nseed {seed + k} {p.describe()}")
            stats["refused"] += 1
            SKIPS[f"SOFIE: {SOFIE_LIMITS.get(known, 'new')}"] += 1
    assert not new, f"SOFIE's code for {len(new)} programs does not compile:\n\n" + "\n\n".join(new)
    return kept


def check_batch_through_sofie(family, progs, seed, dynamic=False):
    """Every program of the batch SOFIE takes, built with SOFIE and compared with JAX."""
    # counted in the fuzz summary as a mode of its own: refusals (SOFIE's too) under "refused"
    stats = FAMILY_STATS[(family, "run-time, SOFIE" if dynamic else "static, SOFIE")]
    events = 3 if dynamic else None
    if dynamic:
        progs = [p for p in progs if any(not a.weight for a in p.args)]
    kept, new = [], []
    for k, p in enumerate(progs):
        try:
            model, _ = convert_batch([p], seed + k, events)
        except UnsupportedPrimitiveError:
            stats["refused"] += 1
            continue
        why = _sofie_takes(model)
        if not why:
            kept.append(p)
            continue
        known = _known(why)
        if known is None:
            new.append(" ".join(why.split())[:400] + f"\nseed {seed + k} {p.describe()}")
        stats["refused"] += 1
        SKIPS[f"SOFIE: {SOFIE_LIMITS.get(known, 'new')}"] += 1
    assert not new, (f"{len(new)} programs meet a SOFIE behaviour not in SOFIE_LIMITS (avoid it in the export "
                     "for SOFIE, or list it):\n\n" + "\n\n".join(new))
    if not kept:
        return
    model, xs = convert_batch(kept, seed, events)
    try:
        compiled = model.compile_sofie(route="onnx")
    except BuildError:   # SOFIE's code for some program does not compile: find them, build the rest
        kept = _compiling(kept, seed, events, stats)
        if not kept:
            return
        model, xs = convert_batch(kept, seed, events)
        compiled = model.compile_sofie(route="onnx")
    verdicts = _compare(kept, compiled, model, [np.asarray(v) for v in xs], seed, dynamic)
    failures = [m for kind, m in verdicts if kind == "mismatch"]
    for kind, _ in verdicts:
        stats[kind] += 1
    assert not failures, (f"{len(failures)} of {len(kept)} programs differ from JAX through SOFIE:\n\n"
                          + "\n\n".join(failures))
