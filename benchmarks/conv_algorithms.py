"""The convolution algorithms side by side: im2col + the packed product, the implicit GEMM
(cpp/conv_implicit.py) and, where it applies, Winograd's F(2x2, 3x3) (cpp/winograd.py; where it
wins sets its MIN_CHANNELS).

One convolution (+ bias, relu) per row, generated each way and timed in a C++ harness (one thread,
best of 5 x `--iters` calls, the ways timed in turn `--rounds` times):

    python benchmarks/conv_algorithms.py                      # -O3 -march=native
    python benchmarks/conv_algorithms.py --flags "-O2 -march=x86-64-v3 -std=c++17"

Prints a table: the shape, each way's time in microseconds, and each one's ratio to im2col's.
"""
from __future__ import annotations

import argparse

import jax
import numpy as np

import jaxpr2sofie as j2s
from jaxpr2sofie.bench.machine import cpu_info
from jaxpr2sofie.cpp import winograd
from jaxpr2sofie.cpp.build import build_timing_harness
from jaxpr2sofie.ir.ops import conv as conv_ir

# (height, width, input channels, output channels, kernel, stride, padding, batch)
SHAPES = [
    (13, 13, 16, 32, 3, 1, "VALID", 1),   # model C's second convolution
    (13, 13, 16, 32, 3, 1, "VALID", 16),
    (28, 28, 8, 8, 3, 1, "SAME", 1),
    (28, 28, 8, 16, 3, 1, "SAME", 1),
    (7, 7, 8, 16, 3, 1, "SAME", 1),
    (56, 56, 16, 16, 3, 1, "SAME", 1),
    (14, 14, 32, 32, 3, 1, "SAME", 1),
    (14, 14, 64, 64, 3, 1, "SAME", 1),
    (7, 7, 128, 128, 3, 1, "SAME", 1),
    (5, 5, 64, 64, 3, 1, "SAME", 1),
    (28, 28, 32, 64, 3, 2, "SAME", 1),   # a ResNet-style downsampling
    (14, 14, 64, 128, 1, 2, "VALID", 1),   # its 1x1 shortcut
    (28, 28, 12, 24, 5, 1, "SAME", 1),
    (32, 32, 6, 16, 5, 1, "VALID", 1),   # LeNet's second
]
WAYS = ("im2col", "implicit", "winograd")


def _conv(stride, padding):
    def fn(p, x):
        y = jax.lax.conv_general_dilated(x, p["k"], (stride, stride), padding,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y + p["b"])
    return fn


def _harness(fn, params, x, flags, way):
    """The convolution built `way`: the selection rules' thresholds moved for the time of the build."""
    saved = winograd.MIN_CHANNELS, conv_ir.TAP_ROWS, conv_ir.IMPLICIT_MAX_CIN
    winograd.MIN_CHANNELS = 1 if way == "winograd" else 10 ** 9
    conv_ir.TAP_ROWS = 0 if way == "im2col" else saved[1]
    conv_ir.IMPLICIT_MAX_CIN = 10 ** 9   # the implicit GEMM wherever it applies, past the width rule
    try:
        model = j2s.convert(fn, params, x, name="ConvAlgo", progress=False)
        if model.graph.ops[0].algorithm(model.graph) != way:
            return None
        return build_timing_harness(model.graph, flags=flags)   # the header is written here
    finally:
        winograd.MIN_CHANNELS, conv_ir.TAP_ROWS, conv_ir.IMPLICIT_MAX_CIN = saved


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flags", default="-O3 -march=native -std=c++17")
    ap.add_argument("--iters", type=int, default=0, help="calls per repetition (default: about 20 ms of work)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    flags = args.flags.split()
    cpu = cpu_info()
    print(f"{cpu['model']} ({' '.join(cpu['flags'])}), {cpu['cores']} cores; {args.flags}; one thread")
    print(f"{'shape (H x W x Cin -> Cout, kernel/stride, padding, batch)':58}"
          + "".join(f"{way + ' us':>14}" for way in WAYS) + "".join(f"{way[:4] + '/im2col':>14}" for way in WAYS[1:]))
    rng = np.random.default_rng(0)
    for h, w, cin, cout, k, stride, padding, batch in SHAPES:
        params = {"k": (rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32),
                  "b": rng.standard_normal(cout).astype(np.float32)}
        x = rng.standard_normal((batch, h, w, cin)).astype(np.float32)
        fn = _conv(stride, padding)
        harnesses = {way: _harness(fn, params, x, flags, way) for way in WAYS}
        macs = batch * h * w * k * k * cin * cout / stride ** 2
        iters = args.iters or max(10, int(4e8 / macs))
        timed = {}
        for _ in range(args.rounds):
            for way, harness in harnesses.items():
                if harness is not None:
                    best = min(harness.run(iters, reps=5)) / 1e3
                    timed[way] = min(timed.get(way, best), best)
        for harness in harnesses.values():
            if harness is not None:
                harness.close()
        shape = f"{h} x {w} x {cin} -> {cout}, {k}x{k}/{stride}, {padding}, {batch}"
        cells = [f"{timed[way]:14.2f}" if way in timed else f"{'-':>14}" for way in WAYS]
        ratios = [f"{timed[way] / timed['im2col']:14.2f}" if way in timed else f"{'-':>14}" for way in WAYS[1:]]
        print(f"{shape:58}" + "".join(cells) + "".join(ratios))


if __name__ == "__main__":
    main()
