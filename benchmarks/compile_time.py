"""Time to a runnable model: convert and g++ build with an empty compile cache, and the run time the
build buys, for the peer benchmark's CNNs (issue 14: MobileNetV2 96x96x3 converted and compiled
in at most 10 s on the 2-core development machine).

Run: python benchmarks/compile_time.py [--models G,C] [--batches 1,16] [--flags "-O2 -march=native -std=c++17"]
(prints a table; nothing is asserted)
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

# an empty compile cache for this process, before jaxpr2sofie reads the variable
os.environ["JAXPR2SOFIE_CACHE"] = tempfile.mkdtemp(prefix="j2s-compile-time-")

import jaxpr2sofie as j2s  # noqa: E402
from jaxpr2sofie.bench.models import MODELS  # noqa: E402
from jaxpr2sofie.cpp.build import DEFAULT_FLAGS, time_in_cpp  # noqa: E402
from jaxpr2sofie.cli import _machine  # noqa: E402


def measure(key: str, batch: int, flags) -> dict:
    model = MODELS[key]
    built = model.build()
    x = model.sample(built.event_shape, batch)
    t0 = time.perf_counter()
    m = j2s.convert(built.fn, built.params, x, name=f"{model.name}B{batch}", progress=False)
    t1 = time.perf_counter()
    m.compile(flags=flags)
    t2 = time.perf_counter()
    lines = m.header().count("\n")
    # at least ~0.5 s of calls per repetition, whatever the model's size
    probe = time_in_cpp(m.graph, iters=3, flags=flags)
    iters = max(3, int(0.5e9 / max(probe, 1.0)))
    ns = time_in_cpp(m.graph, iters=iters, flags=flags)
    return {"model": key, "batch": batch, "convert": t1 - t0, "compile": t2 - t1, "lines": lines, "us": ns / 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="G,C")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--flags", default=" ".join(DEFAULT_FLAGS))
    args = ap.parse_args()
    flags = args.flags.split()
    print(f"machine: {_machine()}   flags: {' '.join(flags)}\n")
    print(f"{'model':<6}{'batch':>6}{'convert s':>11}{'g++ s':>8}{'total s':>9}{'lines':>8}{'run us':>12}")
    for key in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            r = measure(key, batch, flags)
            print(f"{r['model']:<6}{r['batch']:>6}{r['convert']:>11.1f}{r['compile']:>8.1f}"
                  f"{r['convert'] + r['compile']:>9.1f}{r['lines']:>8}{r['us']:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
