"""ROOT's own TMVA SOFIE as a peer, where the installed ROOT has it.

SOFIE's `RModelParser_ONNX` reads the jax2onnx export (the file a JAX user would hand to SOFIE),
generates its header and weight file, and a small C++ program times `Session::infer` as our
harness times `Session::run`, on one thread. The PyPI `root` package has no TMVA, so on the
machines this project runs on the column is "absent" with that reason: this path has not been run
here (it follows SOFIE's documented Python and C++ API; expect to adjust it on a ROOT with SOFIE).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from importlib import metadata

import numpy as np

from ..cpp.build import DEFAULT_FLAGS, ONE_THREAD, find_blas, find_compiler
from ..sofie_backend import NO_SOFIE, probe_root
from .contenders import Case, Contender, Runner, jax2onnx_export


_GENERATE = """
import sys, ROOT
onnx_path, header = sys.argv[1:3]
model = ROOT.TMVA.Experimental.SOFIE.RModelParser_ONNX().Parse(onnx_path)
model.Generate()
model.OutputGenerated(header)
print("generated")
"""

# usage: timing WEIGHTS check X.bin Y.bin | timing WEIGHTS ITERS REPS
_HARNESS = r"""
#include "{name}.hxx"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <vector>
int main(int argc, char** argv) {{
   TMVA_SOFIE_{name}::Session s(argv[1]);
   std::vector<float> x({size});
   if (std::strcmp(argv[2], "check") == 0) {{
      std::ifstream(argv[3], std::ios::binary).read(reinterpret_cast<char*>(x.data()), x.size() * sizeof(float));
      auto y = s.infer(x.data());
      std::ofstream(argv[4], std::ios::binary).write(reinterpret_cast<const char*>(y.data()), y.size() * sizeof(float));
      return 0;
   }}
   const long iters = std::atol(argv[2]);
   const int reps = std::atoi(argv[3]);
   for (long i = 0; i < iters / 10 + 1; ++i) s.infer(x.data());
   for (int r = 0; r < reps; ++r) {{
      auto t0 = std::chrono::steady_clock::now();
      for (long i = 0; i < iters; ++i) s.infer(x.data());
      std::printf("%.1f\n", std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / iters);
   }}
   return 0;
}}
"""


def sofie_absent() -> str:
    """"" when ROOT's TMVA SOFIE is importable, else why not, with the ROOT found."""
    why, version = probe_root()
    if why != NO_SOFIE:
        return why
    try:
        where = f"PyPI root {metadata.version('root')}, ROOT {version or '?'}"
    except metadata.PackageNotFoundError:
        where = f"ROOT {version or '?'}"
    return f"ROOT has no TMVA/SOFIE ({where})"


def _root_config(arg: str) -> list:
    return shlex.split(subprocess.run(["root-config", arg], capture_output=True, text=True, check=True).stdout)


class SofieRunner(Runner):
    def __init__(self, exe, weights, output):
        super().__init__(output)
        self.exe, self.weights = exe, weights

    def time(self, iters: int, samples: int) -> list:
        res = subprocess.run([str(self.exe), str(self.weights), str(iters), str(samples)], capture_output=True,
                             text=True, env=dict(os.environ, **ONE_THREAD), check=True)
        return [float(v) for v in res.stdout.split()]


class Sofie(Contender):
    key = "sofie"
    label = "ROOT TMVA SOFIE: its ONNX parser on the jax2onnx export, Session::infer timed in C++, 1 thread"
    threads = "1: OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1"

    def absent(self) -> str:
        try:
            import jax2onnx  # noqa: F401
        except ImportError:
            return "needs the jax2onnx export, and jax2onnx is not installed"
        return sofie_absent()

    def prepare(self, case: Case) -> Runner:
        onnx_path = case.work / f"{case.name}.onnx"   # SOFIE names the model after the file
        onnx_path.write_bytes(jax2onnx_export(case))
        header = case.work / f"{case.name}.hxx"
        res = subprocess.run([sys.executable, "-c", _GENERATE, str(onnx_path), str(header)], capture_output=True,
                             text=True, timeout=900)
        if "generated" not in res.stdout:
            lines = res.stderr.strip().splitlines()
            raise RuntimeError(f"SOFIE could not parse the export: {lines[-1] if lines else 'no message'}")
        (case.work / "main.cpp").write_text(_HARNESS.format(name=case.name, size=case.x.size))
        blas = find_blas("system")     # SOFIE calls the plain Fortran sgemm_
        exe = case.work / "sofie-timing"
        subprocess.run([find_compiler(), *DEFAULT_FLAGS, *_root_config("--cflags"), "main.cpp", "-o", str(exe),
                        *_root_config("--libs"), "-lROOTTMVASofie", *blas.link], cwd=case.work, check=True,
                       capture_output=True)
        weights = case.work / f"{case.name}.dat"
        case.x.astype(np.float32).tofile(case.work / "x.bin")
        subprocess.run([str(exe), str(weights), "check", str(case.work / "x.bin"), str(case.work / "y.bin")],
                       check=True, capture_output=True, env=dict(os.environ, **ONE_THREAD))
        y = np.fromfile(case.work / "y.bin", np.float32).reshape(case.reference.shape)
        return SofieRunner(exe, weights, y)
