"""The peer benchmark's loop: every model x batch, every contender checked, then timed interleaved.

Per cell, each contender is prepared (converted, exported or compiled) and its output checked
against JAX on the same input; then `repeats` rounds time every contender that passed, in an order
that rotates each round, so slow drifts of a shared machine (another job, the clock) spread over
all contenders instead of landing on one. A round's figure is the median of `samples` loops; the
cell's figure is the median of the rounds (median of medians). A contender that cannot run, fails
to convert or fails the check gets a cell with the reason; the run goes on.
"""
from __future__ import annotations

import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contenders import DEFAULT_FLAG_SETS, FLAG_SETS, Case, all_contenders, flag_set_contenders
from .models import MODELS

TOLERANCE = 1e-4      # max |contender - JAX| / max |JAX|, per cell


@dataclass
class Settings:
    models: list = field(default_factory=lambda: list(MODELS))
    batches: list | None = None          # None: each model's own list
    contenders: list | None = None       # None: all
    flag_sets: list = field(default_factory=lambda: list(DEFAULT_FLAG_SETS))   # ours and SOFIE built with each
    repeats: int = 5                     # rounds of interleaved timing per cell
    samples: int = 3                     # loops per contender per round
    target_s: float = 0.03               # seconds one loop should take
    peak_n: int = 1024                   # sgemm size of the physical reference
    quick: bool = False
    rdf_events: int = 1_000_000          # the RDataFrame row's events (bench/rdf.py); 0: no row
    out: Path = Path("benchmarks/results")

    @classmethod
    def quick_settings(cls, **kw):
        base = dict(repeats=2, samples=2, target_s=0.005, peak_n=512, quick=True)
        return cls(**{**base, **{k: v for k, v in kw.items() if v is not None}})


def short(e: BaseException, limit: int = 160) -> str:
    """One line for a table footnote: the exception's type and the first line of its message."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def rel_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise ValueError(f"output shape {got.shape}, JAX's is {want.shape}")
    scale = float(np.abs(want).max(initial=0.0)) or 1.0
    err = float(np.abs(got - want).max(initial=0.0)) / scale
    return err if np.isfinite(err) else float("inf")


def calibrate(runner, target_ns: float) -> int:
    """Calls per loop so that one loop takes about `target_ns`."""
    t = min(runner.time(1, 3))
    return int(max(1, min(1_000_000, round(target_ns / max(t, 1.0)))))


def measure(runners: dict, iters: dict, settings: Settings, on_error) -> dict:
    """Median of `repeats` rounds of per-round medians, each round visiting every runner in a
    rotated order. Returns the per-round medians (ns) of the runners that never failed."""
    rounds = {k: [] for k in runners}
    keys = list(runners)
    for r in range(settings.repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            if k not in rounds:
                continue
            try:
                rounds[k].append(statistics.median(runners[k].time(iters[k], settings.samples)))
            except Exception as e:    # noqa: BLE001 - one contender's failure is its cell's, not the run's
                on_error(k, f"timing failed: {short(e)}")
                del rounds[k]
    return rounds


def overhead_runners(contenders: dict, settings: Settings, log) -> dict:
    """For each Python-called runtime, a trivial model (x + 1 on a (1, 1) input) called the same
    way, and its calibrated loop length. It is timed in every cell's rounds, beside the contenders
    it stands for, so the overhead subtracted from a cell was measured under that cell's load."""
    out = {}
    for c in contenders.values():
        if c.overhead_key is None or c.overhead_key in out:
            continue
        try:
            runner = c.trivial()
            out[c.overhead_key] = (runner, calibrate(runner, settings.target_s * 1e9))
        except Exception as e:    # noqa: BLE001
            log(f"could not measure the Python overhead of {c.key}: {short(e)}; nothing is subtracted from it")
    return out


class Refused(Exception):
    """A contender that will not be timed in this cell; the message is the cell's reason."""


def ready(contender, case: Case, cell: dict, target_ns: float):
    """The contender's runner for the case, checked against JAX and calibrated, or `Refused`."""
    try:
        runner = contender.prepare(case)
    except Exception as e:    # noqa: BLE001 - whatever a peer raises is its cell's reason
        raise Refused(f"conversion failed: {short(e)}") from e
    try:
        try:
            cell["rel_err"] = err = rel_error(runner.output, case.reference)
        except Exception as e:    # noqa: BLE001
            raise Refused(f"check failed: {short(e)}") from e
        if err > TOLERANCE:
            raise Refused(f"check failed: max error {err:.2g} of the output scale > {TOLERANCE:g}")
        try:
            cell["iters"] = calibrate(runner, target_ns)
        except Exception as e:    # noqa: BLE001
            raise Refused(f"timing failed: {short(e)}") from e
    except Refused:
        runner.close()
        raise
    return runner


def reference(model, built, batch) -> tuple:
    """The cell's input and JAX's output on it, the answer every contender is checked against."""
    import jax
    x = model.sample(built.event_shape, batch)
    ref = jax.jit(built.fn)(built.params, x)
    if not hasattr(ref, "shape"):
        raise TypeError("the benchmark reads one array output")
    return x, np.asarray(ref)


def run_cell(model, built, batch, x, ref, contenders, present, trivial, settings) -> list:
    """One model at one batch: every present contender prepared and checked, then timed interleaved."""
    work = Path(tempfile.mkdtemp(prefix=f"j2s-bench-{model.key}{batch}-"))
    case = Case(model, built, batch, x, ref, work)
    cells = {k: {"model": model.key, "batch": batch, "contender": k, "status": "absent" if present[k] else None,
                 "reason": present[k] or None} for k in contenders}
    runners = {}

    def fail(k, reason):
        cells[k].update(status="error", reason=reason)
        if k in runners:
            runners.pop(k).close()

    try:
        for k, c in contenders.items():
            if not present[k]:
                if c.skip(case):
                    cells[k].update(status="skipped", reason=c.skip(case))
                    continue
                try:
                    runners[k] = ready(c, case, cells[k], settings.target_s * 1e9)
                except Refused as e:
                    fail(k, str(e))
        used = {contenders[k].overhead_key for k in runners} & set(trivial)
        timed = {**runners, **{f"overhead:{o}": trivial[o][0] for o in used}}
        iters = {**{k: cells[k]["iters"] for k in runners}, **{f"overhead:{o}": trivial[o][1] for o in used}}
        rounds = measure(timed, iters, settings, lambda k, why: fail(k, why) if k in cells else None)
        overhead = {k.split(":", 1)[1]: statistics.median(ns) / 1e3 for k, ns in rounds.items()
                    if k.startswith("overhead:")}
        for k, ns in rounds.items():
            if k not in cells:
                continue
            raw = statistics.median(ns) / 1e3
            over = overhead.get(contenders[k].overhead_key, 0.0)
            cell = cells[k]
            cell.update(status="ok", raw_us=raw, overhead_us=over, us=max(raw - over, 0.0),
                        rounds_us=[v / 1e3 for v in ns])
            if runners[k].flops:
                cell.update(flops=runners[k].flops,
                            gflops=runners[k].flops / (cell["us"] * 1e3) if cell["us"] else None)
    finally:
        for r in runners.values():
            r.close()
        shutil.rmtree(work, ignore_errors=True)
    return [cells[k] for k in contenders]


def model_absent(model) -> str:
    if model.needs and importlib.util.find_spec(model.needs) is None:
        return f"model needs {model.needs}, which is not installed (pip install {model.needs})"
    return ""


def run(settings: Settings, log=None) -> dict:
    """The whole benchmark; returns the results that `report` prints, writes and plots."""
    from . import machine
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S")
    everything = {**all_contenders(), **flag_set_contenders(settings.flag_sets)}
    wanted = settings.contenders or list(everything)
    unknown = [k for k in wanted if k not in everything]
    if unknown:
        raise ValueError(f"unknown contender(s) {', '.join(unknown)}: choose from {', '.join(everything)}")
    bad = [m for m in settings.models if m not in MODELS]
    if bad:
        raise ValueError(f"unknown model(s) {', '.join(bad)}: choose from {', '.join(MODELS)}")
    contenders = {k: everything[k] for k in everything if k in wanted}
    present = {k: c.absent() for k, c in contenders.items()}
    for k, why in present.items():
        if why:
            log(f"{k}: absent: {why}")
    try:
        peak = machine.sgemm_peak(settings.peak_n, 3 if settings.quick else 10)
    except Exception as e:    # noqa: BLE001
        peak = {"error": short(e)}
    log(f"sgemm peak: {peak}")
    trivial = overhead_runners({k: c for k, c in contenders.items() if not present[k]}, settings, log)
    cells = []
    for key in settings.models:
        model = MODELS[key]
        batches = settings.batches or list(model.batches)
        absent, error, built = model_absent(model), None, None
        if not absent:
            try:
                built = model.build()
            except Exception as e:    # noqa: BLE001
                error = f"model could not be built: {short(e)}"
        for batch in batches:
            if absent or error:
                cells += [{"model": key, "batch": batch, "contender": k, "status": "absent" if absent else "error",
                           "reason": absent or error} for k in contenders]
                continue
            try:
                x, ref = reference(model, built, batch)
            except Exception as e:    # noqa: BLE001 - no reference: nothing can be checked in this cell
                row = [{"model": key, "batch": batch, "contender": k, "status": "error",
                        "reason": f"JAX reference failed: {short(e)}"} for k in contenders]
            else:
                row = run_cell(model, built, batch, x, ref, contenders, present, trivial, settings)
            cells += row
            log(f"{key} batch {batch}: " + ", ".join(
                f"{c['contender']} {c['us']:.2f}" if c["status"] == "ok" else f"{c['contender']} {c['status']}"
                for c in row) + " (µs)")
    for runner, _ in trivial.values():
        runner.close()
    from . import rdf
    rdf_row = rdf.run(settings, log) if settings.rdf_events else None
    # the header's figure: the median of the overheads measured in every cell
    overheads = {o: statistics.median(vals) for o in trivial
                 if (vals := [c["overhead_us"] for c in cells if c.get("overhead_us") is not None
                              and contenders[c["contender"]].overhead_key == o])}
    return {"settings": {"models": settings.models, "batches": settings.batches, "repeats": settings.repeats,
                         "flag_sets": {f: FLAG_SETS[f] for f in settings.flag_sets},
                         "samples": settings.samples, "target_s": settings.target_s, "quick": settings.quick,
                         "tolerance": TOLERANCE, "rdf_events": settings.rdf_events},
            "machine": machine.cpu_info(), "versions": machine.versions(), "threads": machine.thread_settings(),
            "peak": peak, "overhead_us": overheads,
            "contenders": {k: {"label": c.label, "threads": c.threads, "single_thread": c.single_thread,
                               "flag_set": c.flag_set,
                               "overhead": c.overhead_key,
                               "absent": present[k] or None} for k, c in contenders.items()},
            "models": {k: {"title": MODELS[k].title, "batches": settings.batches or list(MODELS[k].batches)}
                       for k in settings.models},
            "cells": cells, "rdf": rdf_row, "date": started, "wall_s": time.perf_counter() - t0}
