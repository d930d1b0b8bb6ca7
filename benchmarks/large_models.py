"""Large models (issue 26): time and peak memory of each step for MLPs of 1 M, 10 M and 84 M weights.

Run: python benchmarks/large_models.py [--sizes 1M,10M,84M]   (prints a table; nothing is asserted)

Each model is five square dense layers with ReLU (84 M: five 4096x4096 layers, the issue's model).
Every step runs in a fresh child process that first builds the model, then resets its peak-memory
counter (/proc/self/clear_refs), so the "peak" of a step is that step's own: `+MB` is the growth of
the resident set over what the process held when the step began (Python, JAX and the model's
weights, already in memory). Compile runs with an empty compile cache, so it includes g++ on the
model's header; the one-off precompiled header of the standard includes is built first by a tiny
model and timed apart (`PCH s`). `g++ MB` is the largest peak of the step's child processes (the
compiler runs). CPU seconds stand beside wall times: on a shared machine they tell what a step
cost apart from waiting for a core. Load times are the Session constructor timed inside a C++ program,
best of 3, from files just written (in the page cache).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"1M": 448, "10M": 1408, "84M": 4096}    # layer width: 5 * width^2 weights
LAYERS = 5

LOAD_MAIN = r"""
#include "Large.hxx"
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
int main(int, char** argv) {
   double best = 1e30, cpu = 1e30;   // wall and CPU seconds of the constructor, best of 3
   for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::clock_t c0 = std::clock();
      TMVA_SOFIE_Large::Session s(argv[1]);
      const std::clock_t c1 = std::clock();
      const auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
      cpu = std::min(cpu, double(c1 - c0) / CLOCKS_PER_SEC);
   }
   std::printf("%.4f %.4f\n", best, cpu);
}
"""


def _status() -> dict:
    return {k: int(v) * 1024 for k, v in re.findall(r"(Vm\w+):\s+(\d+) kB", Path("/proc/self/status").read_text())}


def _cpu() -> float:
    """CPU seconds of this process: on a shared machine, what the step cost apart from waiting."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _model(width: int):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import jaxpr2sofie as j2s
    rng = np.random.default_rng(0)
    params = [{"w": rng.standard_normal((width, width), np.float32) / np.float32(np.sqrt(width)),
               "b": rng.standard_normal(width, np.float32) * np.float32(0.1)} for _ in range(LAYERS)]

    def mlp(p, x):
        for layer in p:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        return x
    x = np.ones((1, width), np.float32)
    return (lambda: j2s.convert(mlp, params, x, name="Large", progress=False)), x


def _warm_pch() -> float:
    """Seconds to compile a tiny model into the empty cache: mostly the precompiled header of the
    standard includes, built once per compiler and flags and then shared by every model."""
    import numpy as np
    import jaxpr2sofie as j2s
    t0 = time.perf_counter()
    j2s.convert(lambda p, x: x @ p, np.ones((2, 2), np.float32), np.ones((1, 2), np.float32), name="Tiny",
                progress=False).compile()
    return time.perf_counter() - t0


def step(name: str, width: int, out: Path) -> dict:
    """One step in this (child) process; returns its figures."""
    make, x = _model(width)
    m = None if name == "convert" else make()
    res = {}
    if name == "compile":   # the one-off build of the precompiled standard headers, timed apart
        res["pch"] = _warm_pch()
    before = _status()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")     # the peak from here on is this step's own
    t0, cpu0 = time.perf_counter(), _cpu()
    if name == "convert":
        m = make()
    elif name == "text":
        _, dat = m.generate(out / "text")
        res["bytes"] = dat.stat().st_size
    elif name == "binary":
        _, dat = m.generate(out / "binary", weights="binary")
        res["bytes"] = dat.stat().st_size
    elif name == "compile":
        c = m.compile()
        res["compile"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        c(x)
        res["first_call"] = time.perf_counter() - t1
    res["seconds"] = time.perf_counter() - t0
    res["cpu"] = _cpu() - cpu0
    res["peak"] = _status()["VmHWM"]
    res["growth"] = res["peak"] - before
    res["children_peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    res["weights"] = m.parameter_count()
    return res


def _child(name: str, size: str, out: Path, cache: Path) -> dict:
    env = dict(os.environ, JAXPR2SOFIE_CACHE=str(cache), JAXPR2SOFIE_QUIET="1", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, __file__, "--step", name, "--size", size, "--out", str(out)],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"step {name} of {size} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _load_times(out: Path) -> dict:
    """Session constructor in C++, from the text and the binary file."""
    from jaxpr2sofie.cpp.build import DEFAULT_FLAGS, find_compiler, link_flags
    (out / "load.cpp").write_text(LOAD_MAIN)
    subprocess.run([find_compiler(), *DEFAULT_FLAGS, *link_flags().split(), f"-I{out / 'text'}", "load.cpp",
                    "-o", "load"], cwd=out, check=True)
    times = {}
    for fmt in ("text", "binary"):
        res = subprocess.run([str(out / "load"), str(out / fmt / "Large.dat")], capture_output=True, text=True,
                             check=True)
        times[fmt], times[fmt + "_cpu"] = map(float, res.stdout.split())
    return times


def measure(size: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="j2s-large-") as d:
        out = Path(d)
        row = {"size": size}
        for name in ("convert", "text", "binary", "compile"):
            row[name] = _child(name, size, out, out / f"cache-{name}")
        row["load"] = _load_times(out)
    return row


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f}"


def report(rows: list) -> str:
    from jaxpr2sofie.cli import _machine
    from jaxpr2sofie.cpp.build import DEFAULT_FLAGS
    head = ("| weights | convert s | text s (CPU s) | µs/weight | text MB | text +MB | binary s | binary +MB "
            "| compile s (PCH s) | compile +MB | g++ MB | first call ms | load text s (CPU s) | M values/s (CPU) "
            "| load binary s |")
    lines = [f"machine: {_machine()}; C++ flags {' '.join(DEFAULT_FLAGS)}", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        n = r["convert"]["weights"]
        t, b, c, load = r["text"], r["binary"], r["compile"], r["load"]
        lines.append(
            f"| {n / 1e6:.1f} M ({_mb(4 * n)} MB) | {r['convert']['seconds']:.2f} "
            f"| {t['seconds']:.2f} ({t['cpu']:.2f}) | {t['seconds'] / n * 1e6:.3f} | {_mb(t['bytes'])} "
            f"| {_mb(t['growth'])} | {b['seconds']:.2f} | {_mb(b['growth'])} | {c['compile']:.2f} ({c['pch']:.1f}) "
            f"| {_mb(c['growth'])} | {_mb(c['children_peak'])} | {c['first_call'] * 1e3:.1f} "
            f"| {load['text']:.2f} ({load['text_cpu']:.2f}) | {n / load['text'] / 1e6:.0f} "
            f"({n / load['text_cpu'] / 1e6:.0f}) | {load['binary']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--step")
    ap.add_argument("--size")
    ap.add_argument("--out")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args(argv)
    if a.step:
        print(json.dumps(step(a.step, SIZES[a.size], Path(a.out))))
        return 0
    rows = []
    for size in a.sizes.split(","):
        rows.append(measure(size))
        print(f"{size}: done", file=sys.stderr)
    print(report(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
