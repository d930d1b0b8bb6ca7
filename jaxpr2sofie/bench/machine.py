"""What the benchmark ran on: the CPU, the software versions, and the machine's sgemm peak.

The peak is the physical reference for our GFLOP/s: measured with the same BLAS the generated code
links (`find_blas()`), through the same symbol, once on one core and once on all cores.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from ..cpp.build import DEFAULT_FLAGS, find_blas, find_compiler

# The CPU features that decide which kernels BLAS, XLA, ONNX Runtime and IREE pick.
FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "amx_tile")


def cpu_info() -> dict:
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())   # the first core speaks for all
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    return {"model": model, "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
            "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}


def cpu_slug(model: str) -> str:
    slug = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*", "", model.lower())
    return re.sub(r"[^a-z0-9]+", "-", slug).strip("-") or "cpu"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _first_line(cmd) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr).strip() else None


def tool(name: str) -> str | None:
    """A command-line tool on the PATH, or next to this Python (a venv used without activating it)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else None


def versions() -> dict:
    out = {d: _version(d) for d in ("jaxpr2sofie", "jax", "jaxlib", "numpy", "onnx", "onnxruntime", "jax2onnx",
                                    "iree-base-compiler", "iree-base-runtime", "scipy-openblas32", "flax", "keras")}
    try:
        out["c++"] = _first_line([find_compiler(), "--version"])
    except Exception as e:   # no compiler: the benchmark's own cells say so
        out["c++"] = f"none ({e})"
    iree = tool("iree-compile")
    if iree:
        line = next((ln for ln in subprocess.run([iree, "--version"], capture_output=True, text=True).stdout.splitlines()
                     if "IREE compiler version" in ln), None)
        out["iree-compile"] = line.split("version", 1)[1].strip() if line else None
    return out


def thread_settings() -> dict:
    """The environment variables that change how many threads the contenders use."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "JAXPR2SOFIE_BLAS")
    return {n: os.environ.get(n) for n in names}


_SGEMM_MAIN = r"""
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
extern "C" void J2S_SGEMM(const char*, const char*, const int*, const int*, const int*, const float*,
                          const float*, const int*, const float*, const int*, const float*, float*, const int*);
// usage: sgemm N REPS: prints the best GFLOP/s of REPS products of two NxN matrices
int main(int argc, char** argv) {
   const int n = std::atoi(argv[1]), reps = std::atoi(argv[2]);
   std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n, 0.f);
   const float one = 1.f, zero = 0.f;
   double best = 0;
   for (int r = 0; r < reps + 1; ++r) {   // the first product warms caches and threads up
      auto t0 = std::chrono::steady_clock::now();
      J2S_SGEMM("N", "N", &n, &n, &n, &one, a.data(), &n, b.data(), &n, &zero, c.data(), &n);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0 && 2.0 * n * n * n / s / 1e9 > best) best = 2.0 * n * n * n / s / 1e9;
   }
   std::printf("%.2f %g\n", best, double(c[0]));
   return 0;
}
"""


def sgemm_peak(n: int = 1024, reps: int = 10) -> dict:
    """GFLOP/s of an n x n x n sgemm (best of `reps`), on one core and on all cores."""
    b = find_blas()
    with tempfile.TemporaryDirectory(prefix="j2s-sgemm-") as d:
        src = Path(d) / "sgemm.cpp"
        src.write_text(_SGEMM_MAIN)
        exe = Path(d) / "sgemm"
        cmd = [find_compiler(), *DEFAULT_FLAGS, f"-DJ2S_SGEMM={b.sgemm}", str(src), "-o", str(exe), *b.link]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"building the sgemm probe failed: {res.stderr[-2000:]}")
        out = {"blas": b.name, "n": n, "reps": reps}
        for label, threads in (("gflops_1core", 1), ("gflops_all_cores", os.cpu_count() or 1)):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
            run = subprocess.run([str(exe), str(n), str(reps)], capture_output=True, text=True, env=env, check=True)
            out[label] = float(run.stdout.split()[0])
        out["all_cores"] = os.cpu_count()
    return out
