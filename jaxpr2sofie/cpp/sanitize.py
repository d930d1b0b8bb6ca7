"""The generated code under AddressSanitizer and UndefinedBehaviorSanitizer.

With JAXPR2SOFIE_SANITIZE=1, `SofieModel.compile()` builds the model into a small program with
`-fsanitize=address,undefined` (any report is fatal) instead of a shared library, and each call
runs that program on the inputs: an instrumented library cannot be loaded into Python without
preloading the sanitizer runtime, a separate process needs nothing. Slow; for tests only.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .build import CompiledModel, compile_cached, find_blas, find_compiler, private_weights, thread_flags
from ..errors import BuildError, InputError, WeightFileError
from ..ir import dims
from .abi import C_API
from .emit import c_api_source, render
from .kernels import BLAS_HELPERS

FLAGS = ["-O1", "-g", "-std=c++17", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", "-Wall", "-Wextra"]

_RUNNER = """\
// Runs the model once: reads <dir>/sizes.txt (batch, then the byte size of every input and output),
// inputs from <dir>/in<k>.bin, writes outputs to <dir>/out<k>.bin (raw bytes, row-major).
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>
@C_API@int main(int argc, char** argv) {
   if (argc != 3) return 64;
   const std::string dir = argv[2];
   std::ifstream sizes(dir + "/sizes.txt");
   size_t batch = 0, n_in = 0, n_out = 0;
   if (!(sizes >> batch >> n_in >> n_out)) return 68;
   std::vector<long> k_in(n_in), k_out(n_out);
   for (auto& n : k_in) sizes >> n;
   for (auto& n : k_out) sizes >> n;
   char err[2048] = {0};
   void* s = j2s_create(argv[1], batch ? batch : 1, err, sizeof err);
   if (!s) { std::fprintf(stderr, "weights: %s\\n", err); return 65; }
   std::vector<std::vector<char>> in, out;
   std::vector<void*> pin, pout;
   for (size_t k = 0; k < n_in; ++k) {
      in.emplace_back(k_in[k] ? k_in[k] : 1);
      if (k_in[k]) {
         std::FILE* f = std::fopen((dir + "/in" + std::to_string(k) + ".bin").c_str(), "rb");
         if (!f || std::fread(in.back().data(), 1, k_in[k], f) != static_cast<size_t>(k_in[k])) return 66;
         std::fclose(f);
      }
   }
   for (long n : k_out) out.emplace_back(n ? n : 1);
   for (auto& v : in) pin.push_back(v.data());
   for (auto& v : out) pout.push_back(v.data());
   j2s_run(s, batch, pin.data(), pout.data());
   for (size_t k = 0; k < out.size(); ++k) {
      std::FILE* f = std::fopen((dir + "/out" + std::to_string(k) + ".bin").c_str(), "wb");
      if (!f) return 67;
      std::fwrite(out[k].data(), 1, k_out[k], f);
      std::fclose(f);
   }
   j2s_destroy(s);
   return 0;
}
"""


def enabled() -> bool:
    return os.environ.get("JAXPR2SOFIE_SANITIZE", "") == "1"


def runner_source() -> str:
    """The sanitizer program's main(): it drives any header behind the project's C entry points."""
    return _RUNNER.replace("@C_API@", C_API)


def build_runner(graph, cxx=None, blas=None) -> Path:
    """The sanitized program of a graph; cached by content hash like the libraries."""
    header, needs = render(graph)
    b = find_blas(blas) if needs & BLAS_HELPERS else None
    main = runner_source()
    capi = c_api_source(graph, f"{graph.name}.hxx")
    compiler = find_compiler(cxx)
    cmd_tail = FLAGS + ["-Werror"] + ([f"-DJ2S_SGEMM={b.sgemm}"] if b else []) + thread_flags(graph)
    return compile_cached({f"{graph.name}.hxx": header, "capi.cpp": capi, "main.cpp": main}, ["capi.cpp", "main.cpp"],
                          "runner", compiler, cmd_tail, list(b.link) if b else [], what="the sanitized program",
                          tag="sanitize-", keep_failed=True)


class SanitizedModel(CompiledModel):
    """Called like a CompiledModel; each call runs the sanitized program, and any sanitizer report
    (or crash) raises BuildError with the report."""

    def __init__(self, graph, exe: Path, weight_file: Path | None = None):
        self.graph = graph
        self.exe = Path(exe)
        self._tmp, self.written = None, None
        if weight_file is None:
            self._tmp, weight_file, self.written = private_weights(graph, "j2s-asan-")
        self.weight_file = Path(weight_file)
        self._session = None
        self.dynamic, self.max_batch = graph.dynamic, graph.max_batch or 1
        self.inputs = [(n, graph.tensors[n].shape, np.dtype(graph.tensors[n].dtype)) for n in graph.inputs]
        self.outputs = [(graph.tensors[n].shape, np.dtype(graph.tensors[n].dtype)) for n in graph.outputs]

    def __call__(self, *args):
        arrays, batch = self._check(args)
        if batch == 0:
            raise InputError("a batch of 0 events: the generated Session takes 1 <= batch <= max_batch")
        n = batch or 0
        shapes = [dims.evaluate_shape(s, n) for s, _ in self.outputs]
        with tempfile.TemporaryDirectory(prefix="j2s-asan-io-") as d:
            sizes = [a.nbytes for a in arrays] + [int(np.prod(s)) * dt.itemsize for s, (_, dt) in zip(shapes, self.outputs)]
            (Path(d) / "sizes.txt").write_text(f"{n} {len(arrays)} {len(self.outputs)} {' '.join(map(str, sizes))}\n")
            for k, a in enumerate(arrays):
                (Path(d) / f"in{k}.bin").write_bytes(a.tobytes())
            env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86",
                       UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=87")
            res = subprocess.run([str(self.exe), str(self.weight_file), d], capture_output=True, text=True, env=env,
                                 timeout=600)
            if res.returncode == 65:
                raise WeightFileError(res.stderr.strip())
            if res.returncode != 0 or "runtime error" in res.stderr or "Sanitizer" in res.stderr:
                raise BuildError(f"the sanitized model {self.graph.name} failed (exit {res.returncode}):\n"
                                 f"{res.stderr[-6000:]}")
            outs = [np.frombuffer((Path(d) / f"out{k}.bin").read_bytes(), dtype=dt).reshape(s).copy()
                    for k, (s, (_, dt)) in enumerate(zip(shapes, self.outputs))]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def close(self):
        pass
