"""Where Winograd's F(2x2, 3x3) beats im2col + the packed product (cpp/winograd.py's MIN_CHANNELS).

One 3x3 stride-1 convolution (+ bias, relu) per row, generated both ways and timed in a C++ harness
(one thread, best of 5 x `--iters` calls, each way timed in turn `--rounds` times):

    python benchmarks/conv_algorithms.py                      # -O3 -march=native
    python benchmarks/conv_algorithms.py --flags "-O2 -march=x86-64-v3 -std=c++17"

Prints a table: the shape, both times in microseconds and their ratio.
"""
from __future__ import annotations

import argparse

import jax
import numpy as np

import jaxpr2sofie as j2s
from jaxpr2sofie.bench.machine import cpu_info
from jaxpr2sofie.cpp import winograd
from jaxpr2sofie.cpp.build import build_timing_harness

# (height, width, input channels, output channels, padding, batch)
SHAPES = [
    (13, 13, 16, 32, "VALID", 1),   # model C's second convolution
    (13, 13, 16, 32, "VALID", 16),
    (28, 28, 8, 8, "SAME", 1),
    (28, 28, 8, 16, "SAME", 1),
    (7, 7, 8, 16, "SAME", 1),
    (56, 56, 16, 16, "SAME", 1),
    (14, 14, 32, 32, "SAME", 1),
    (14, 14, 64, 64, "SAME", 1),
    (7, 7, 128, 128, "SAME", 1),
    (5, 5, 64, 64, "SAME", 1),
]


def _conv(padding):
    def fn(p, x):
        y = jax.lax.conv_general_dilated(x, p["k"], (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y + p["b"])
    return fn


def _harness(fn, params, x, flags, min_channels):
    winograd.MIN_CHANNELS = min_channels
    model = j2s.convert(fn, params, x, name="ConvAlgo", progress=False)
    algorithm = model.graph.ops[0].algorithm(model.graph)
    return algorithm, build_timing_harness(model.graph, flags=flags)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flags", default="-O3 -march=native -std=c++17")
    ap.add_argument("--iters", type=int, default=0, help="calls per repetition (default: about 20 ms of work)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    flags = args.flags.split()
    default = winograd.MIN_CHANNELS
    cpu = cpu_info()
    print(f"{cpu['model']} ({' '.join(cpu['flags'])}), {cpu['cores']} cores; {args.flags}; one thread")
    print(f"{'shape (H x W x Cin -> Cout, padding, batch)':46} {'im2col us':>10} {'winograd us':>12} {'ratio':>6}")
    rng = np.random.default_rng(0)
    try:
        for h, w, cin, cout, padding, batch in SHAPES:
            params = {"k": (rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32),
                      "b": rng.standard_normal(cout).astype(np.float32)}
            x = rng.standard_normal((batch, h, w, cin)).astype(np.float32)
            fn = _conv(padding)
            timed = {}
            harnesses = [_harness(fn, params, x, flags, m) for m in (10 ** 9, 1)]
            assert [a for a, _ in harnesses] == ["im2col", "winograd"], [a for a, _ in harnesses]
            macs = batch * h * w * 9 * cin * cout
            iters = args.iters or max(10, int(2e7 / max(1, macs) * 20))
            for _ in range(args.rounds):
                for algorithm, harness in harnesses:
                    best = min(harness.run(iters, reps=5)) / 1e3
                    timed[algorithm] = min(timed.get(algorithm, best), best)
            for _, harness in harnesses:
                harness.close()
            shape = f"{h} x {w} x {cin} -> {cout}, {padding}, {batch}"
            print(f"{shape:46} {timed['im2col']:10.2f} {timed['winograd']:12.2f} "
                  f"{timed['winograd'] / timed['im2col']:6.2f}")
    finally:
        winograd.MIN_CHANNELS = default


if __name__ == "__main__":
    main()
