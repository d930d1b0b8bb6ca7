"""The peer benchmark: jaxpr2sofie's C++ against XLA, ONNX Runtime (jax2onnx's export and ours),
IREE and ROOT's SOFIE, per model and batch; a table, benchmarks/results/<date>-<cpu>.json and a plot.

Run: python benchmarks/run.py [--quick] [--models A,D] [--batches 1,64] [--contenders ours,xla,...]
(the same as `jaxpr2sofie bench --peers`; see benchmarks/README.md). The code lives in
jaxpr2sofie/bench/ so that an installed jaxpr2sofie runs it too.
"""
from __future__ import annotations

import sys
from pathlib import Path

from jaxpr2sofie.bench import main

if __name__ == "__main__":
    sys.exit(main(default_out=Path(__file__).resolve().parent / "results"))
