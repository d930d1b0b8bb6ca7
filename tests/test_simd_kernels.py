"""The explicit-vector kernels (cpp/simd.py and the kernels written with it) against JAX at every
flag set and ISA path a user may build with: -O3 -march=native (16-lane vectors and 12-row tiles
where the CPU has AVX-512), -O2 with the documented baseline (x86-64-v3: 8-lane vectors, 6-row
product tiles) and -O2 for plain x86-64 (SSE2: 4 lanes, 3-row tiles), with g++ and clang++,
warnings as errors. Each model takes a run-time batch, so one build
checks the products' whole tiles, every leftover row count and the lone-row kernel of batch 1;
widths that are not multiples of 16 or of the vector width check the partial panels and vectors.
No timing here: speed is benchmarks/run.py's."""
from __future__ import annotations

import platform
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr2sofie as j2s
from jaxpr2sofie.cpp.emit import emit_header
from helpers import assert_close, require_tool, slow_except

# flag set: (flags, the products' vector tier on a CPU with AVX-512, on one with AVX2 + FMA only, on
# one with neither); "base" is the build's own ISA. The products are dispatched at run time to the
# widest tier the CPU has above the build's baseline (simd.py); -DJ2S_DISPATCH=0 keeps the baseline.
FLAG_SETS = {
    "O3-native": (["-O3", "-march=native", "-std=c++17"], "base", "base", "base"),
    "O2-x86-64-v3": (["-O2", "-march=x86-64-v3", "-std=c++17"], "avx512", "base", "base"),
    "O2-x86-64-v3-base": (["-O2", "-march=x86-64-v3", "-std=c++17", "-DJ2S_DISPATCH=0"], "base", "base", "base"),
    "O2-x86-64-avx2": (["-O2", "-march=x86-64", "-std=c++17", "-DJ2S_DISPATCH_AVX512=0"], "avx2", "avx2", "base"),
    "O2-x86-64": (["-O2", "-march=x86-64", "-std=c++17", "-DJ2S_DISPATCH=0"], "base", "base", "base"),
}
# the AVX2 baseline without dispatch in the slow set (.ci/run runs it after the main command): its
# 8-lane code is the avx2 tier's, which O2-x86-64-avx2 runs in the main command
FLAG_PARAMS = slow_except(FLAG_SETS, [f for f in FLAG_SETS if f != "O2-x86-64-v3-base"])


# clang++, the second compiler, in the slow set (CI runs it after the main command): the main command stays
# within ten minutes on two cores
COMPILERS = ["g++", pytest.param("clang++", marks=pytest.mark.slow)]
# every leftover row count of a 12-row (AVX-512), 6-row (AVX) and 3-row (SSE2) tile, the lone row,
# whole blocks
BATCHES = [1, 2, 3, 4, 5, 7, 11, 13, 64]

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="the flag sets name x86-64 targets")


def _dense(rng, a, b):
    return {"kernel": (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            "bias": (0.3 * rng.standard_normal(b)).astype(np.float32)}


def mlp(params, x):
    """Widths past, below and at multiples of 16; relu, tanh and no epilogue; a softmax."""
    h = jax.nn.relu(x @ params[0]["kernel"] + params[0]["bias"])       # 7 -> 100: a narrow last panel
    h = jnp.tanh(h @ params[1]["kernel"] + params[1]["bias"])         # 100 -> 37
    h = jax.nn.relu(h @ params[2]["kernel"] + params[2]["bias"])      # 37 -> 16: one whole panel
    h = h @ params[3]["kernel"]                                        # 16 -> 5, no bias
    return jax.nn.softmax(h, axis=-1), jax.nn.sigmoid(h).sum(-1)


def cnn(params, x):
    """3x3 convolutions (direct for one input channel, im2col + packed product for 12) with bias
    and relu / tanh epilogues, a residual add, max pooling with padding, sum pooling."""
    dn = ("NHWC", "HWIO", "NHWC")
    h = lax.conv_general_dilated(x, params["k1"], (1, 1), "SAME", dimension_numbers=dn) + params["b1"]
    h = jax.nn.relu(h)                                                              # 12 channels
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")  # padded windows
    r = lax.conv_general_dilated(h, params["k2"], (1, 1), "SAME", dimension_numbers=dn) + params["b2"]
    h = jnp.tanh(r) + h
    h = lax.reduce_window(h, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return h.reshape(h.shape[0], -1) @ params["w"]


def attention(params, x):
    """Products of two activations (gemm_rows: 16-column panels read in place) and a softmax."""
    q, k, v = (x @ params[n] for n in ("q", "k", "v"))
    att = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / 4.0, axis=-1)
    return jnp.maximum(att @ v, 0.0) + x


def gates(params, x):
    """Fused chains of tanh, logistic and exp (one function per chain, dispatched to the widest vector
    tier from 64 elements: the 100-wide one always, the 8-wide one from batch 8), a softmax and a lone
    logistic (vmath's array functions, dispatched likewise); x carries NaN, infinities and -0."""
    h = jnp.tanh(x) * jax.nn.sigmoid(x * 0.5 + 1.0) + jnp.exp(-x * x) + params["b"]
    small = jnp.tanh(x[:, :8]) * jax.nn.sigmoid(x[:, 8:16])
    return h, jax.nn.softmax(x[:, 16:] * 2.0, axis=-1), small, jax.nn.sigmoid(x * 3.0)


def _cases():
    rng = np.random.default_rng(24)
    mlp_params = [_dense(rng, 7, 100), _dense(rng, 100, 37), _dense(rng, 37, 16), _dense(rng, 16, 5)]
    cnn_params = {"k1": (0.5 * rng.standard_normal((3, 3, 1, 12))).astype(np.float32),
                  "b1": (0.2 * rng.standard_normal(12)).astype(np.float32),
                  "k2": (0.2 * rng.standard_normal((3, 3, 12, 12))).astype(np.float32),
                  "b2": (0.2 * rng.standard_normal(12)).astype(np.float32),
                  "w": (0.3 * rng.standard_normal((4 * 4 * 12, 3))).astype(np.float32)}
    att_params = {n: (rng.standard_normal((20, 20)) / np.sqrt(20)).astype(np.float32) for n in "qkv"}
    gate_params = {"b": (0.3 * rng.standard_normal(100)).astype(np.float32)}
    return {"mlp": (mlp, mlp_params, (7,)), "cnn": (cnn, cnn_params, (15, 15, 1)),
            "attention": (attention, att_params, (24, 20)), "gates": (gates, gate_params, (100,))}


CASES = _cases()


@pytest.fixture(scope="module")
def converted():
    out = {}
    for name, (fn, params, event) in CASES.items():
        x = np.zeros((2, *event), np.float32)
        out[name] = j2s.convert(fn, params, x, name=f"Simd{name.capitalize()}", batch="dynamic", max_batch=64,
                                progress=False)
    return out


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("flags", FLAG_PARAMS)
@pytest.mark.parametrize("case", list(CASES))
def test_vector_kernels_match_jax(converted, case, flags, compiler):
    cxx = require_tool(compiler, "the kernels are checked with both compilers")
    fn, params, event = CASES[case]
    compiled = converted[case].compile(cxx=cxx, flags=FLAG_SETS[flags][0])   # -Werror: conftest's strict mode
    rng = np.random.default_rng(sum(map(ord, case + flags)))
    for batch in BATCHES:
        x = rng.standard_normal((batch, *event)).astype(np.float32)
        if case == "gates":   # special values in both chains and the softmax
            x[:, [3, 20]], x[:, [5, 30]], x[:, [7, 40]], x[:, [9, 50]] = np.nan, np.inf, -np.inf, -0.0
        want = jax.jit(fn)(params, x)
        got = compiled(x)
        want = want if isinstance(want, tuple) else (want,)
        got = got if isinstance(got, tuple) else (got,)
        for k, (g, w) in enumerate(zip(got, want)):
            assert_close(g, np.asarray(w), rtol=2e-5, what=f"{case} output {k}, batch {batch}, {compiler} {flags}")


def test_headers_choose_the_vector_width_by_compiler_macros(converted):
    """One portability layer, chosen at compile time: no -march flag is ever required."""
    header = emit_header(converted["mlp"].graph)
    assert "#elif defined(__GNUC__) && defined(__AVX__)" in header
    # the baseline's: AVX-512, AVX, 16-byte vectors, plain floats; the products' dispatch tiers: AVX-512, AVX2
    assert header.count("typedef float VecF") == 6
    assert "J2S_UNROLL" in header


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


@pytest.mark.parametrize("flags", list(FLAG_SETS))
def test_products_run_in_the_widest_tier_the_cpu_has(converted, flags, tmp_path):
    """The tier the dispatch picks, printed by a program built with the flag set, is the one this
    CPU's /proc/cpuinfo says it has (the numbers of each tier are test_vector_kernels_match_jax's)."""
    cxx = require_tool("g++")
    cpu = _cpu_flags()
    if not cpu:
        pytest.skip("no /proc/cpuinfo flags to compare with")
    build, on512, on2, other = FLAG_SETS[flags]
    want = (on512 if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= cpu
            else on2 if {"avx2", "fma"} <= cpu else other)
    (tmp_path / "m.hxx").write_text(emit_header(converted["mlp"].graph))
    (tmp_path / "main.cpp").write_text('#include "m.hxx"\n#include <cstdio>\n'
                                       'int main() { std::puts(TMVA_SOFIE_SimdMlp::detail::dispatch_tier()); }\n')
    subprocess.run([cxx, *build, "-Wall", "-Wextra", "-Werror", "main.cpp", "-o", "main"], cwd=tmp_path, check=True)
    got = subprocess.run(["./main"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()
    assert got == want, f"{flags}: the products run in tier {got!r}, this CPU calls for {want!r}"
