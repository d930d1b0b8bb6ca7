"""Real SOFIE as a peer: the `sofie` package (standalone SOFIE from PyPI), on both routes to its model.

`sofie`: SOFIE's own ONNX parser reads the project's ONNX export (`to_rmodel(route="onnx")`);
`sofie-ops`: SOFIE's model built operator by operator from our IR (`to_rmodel(route="operators")`).
SOFIE generates its header and text weight file, and a small C++ program, built by the project's
build service with the same flags as ours (cpp.build.DEFAULT_FLAGS), times `Session::infer` as our
harness times `Session::run`, on one thread. SOFIE's products call the Fortran BLAS `sgemm_`; it is linked against the same
OpenBLAS as ours (scipy-openblas32, whose symbols carry a `scipy_` prefix, mapped at compile time).
"""
from __future__ import annotations

import os
import subprocess

import numpy as np

from ..cpp.build import ONE_THREAD
from .contenders import FLAG_SETS, Case, Contender, Runner, flag_key, sofie_model

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
   SOFIE_{name}::Session s(argv[1]);
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
    """"" when the `sofie` package is importable, else why not."""
    from ..sofie_backend import package_status
    return package_status()


class SofieRunner(Runner):
    def __init__(self, exe, weights, output):
        super().__init__(output)
        self.exe, self.weights = exe, weights

    def time(self, iters: int, samples: int) -> list:
        res = subprocess.run([str(self.exe), str(self.weights), str(iters), str(samples)], capture_output=True,
                             text=True, env=dict(os.environ, **ONE_THREAD), check=True)
        return [float(v) for v in res.stdout.split()]


class Sofie(Contender):
    threads = "1: OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1"
    ROUTES = {"onnx": ("sofie", "its ONNX parser on our export"),
              "operators": ("sofie-ops", "its bound operators built from our IR")}

    def __init__(self, route: str = "onnx", flag_set: str = "native"):
        self.route, self.flag_set = route, flag_set
        key, how = self.ROUTES[route]
        self.key = flag_key(key, flag_set)
        self.label = (f"SOFIE (PyPI sofie): {how}, Session::infer timed in C++, 1 thread, built with "
                      f"{' '.join(FLAG_SETS[flag_set])}")

    def absent(self) -> str:
        return sofie_absent()

    def prepare(self, case: Case) -> Runner:
        from ..sofie_oracle import sofie_build
        m = sofie_model(case)
        if m.graph.outputs[1:]:
            raise RuntimeError("the harness times one output")
        exe, weights = sofie_build(m, {"main.cpp": _HARNESS.format(name=m.name, size=case.x.size)}, "sofie-timing",
                                   flags=FLAG_SETS[self.flag_set], route=self.route)
        case.x.astype(np.float32).tofile(case.work / "x.bin")
        subprocess.run([str(exe), str(weights), "check", str(case.work / "x.bin"), str(case.work / "y.bin")],
                       check=True, capture_output=True, env=dict(os.environ, **ONE_THREAD))
        y = np.fromfile(case.work / "y.bin", np.float32).reshape(case.reference.shape)
        return SofieRunner(exe, weights, y)
