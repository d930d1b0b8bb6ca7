"""Weight loading: SOFIE's text format against the binary format, for Keras' MobileNetV2.

Run: python benchmarks/weights.py   (prints a table; nothing is asserted)

Times the Session constructor (open, read, check every tensor) inside a C++ program, best of
several repetitions, for both formats of the same weights.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

import jaxpr2sofie as j2s  # noqa: E402
from jaxpr2sofie.cpp.build import DEFAULT_FLAGS, find_blas, find_compiler  # noqa: E402
from jaxpr2sofie.cli import _machine  # noqa: E402

MAIN = r"""
#include "MobileNetV2.hxx"
#include <algorithm>
#include <chrono>
#include <cstdio>
int main(int, char** argv) {
   double best = 1e30;
   for (int rep = 0; rep < 5; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      TMVA_SOFIE_MobileNetV2::Session s(argv[1]);
      auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
   }
   std::printf("%.3f\n", best);
}
"""


def main():
    import keras
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None)
    m = j2s.from_keras(model, name="MobileNetV2")
    n = m.parameter_count()
    b = find_blas()
    with tempfile.TemporaryDirectory(prefix="j2s-weights-bench-") as d:
        d = Path(d)
        _, text = m.generate(d / "text")
        _, binary = m.generate(d / "binary", weights="binary")
        (d / "main.cpp").write_text(MAIN)
        cmd = [find_compiler(), *DEFAULT_FLAGS, f"-DJ2S_SGEMM={b.sgemm}", f"-I{d / 'text'}", "main.cpp", "-o", "load",
               *b.link]
        subprocess.run(cmd, cwd=d, check=True)
        rows = []
        for label, path in (("text (SOFIE's format)", text), ("binary", binary)):
            ms = float(subprocess.run([str(d / "load"), str(path)], capture_output=True, text=True,
                                      check=True).stdout)
            rows.append((label, path.stat().st_size, ms))
    print(f"machine: {_machine()}")
    print(f"MobileNetV2 (96x96x3, Keras, random weights): {n} weights\n")
    print(f"{'format':24s} {'file size':>12s} {'load':>10s} {'per million weights':>20s}")
    for label, size, ms in rows:
        print(f"{label:24s} {size / 1e6:9.2f} MB {ms:7.2f} ms {ms / n * 1e6:14.2f} ms")
    print(f"\nbinary loads {rows[0][2] / rows[1][2]:.1f}x faster than text")
    return 0


if __name__ == "__main__":
    sys.exit(main())
