"""The convolution kernels (cpp/conv_kernels.py, the pointwise product of cpp/kernels.py) against
JAX at every flag set of test_simd_kernels (AVX-512, x86-64-v3 and SSE2 vectors, the products'
dispatch tiers) and on the portability layer's plain-float path. One model holds every case, so one build per flag set checks
them all at a run-time batch: depthwise 3x3 at stride 1 and 2 with SAME, VALID and asymmetric
padding, channel counts below, at and past the vector widths (3, 5, 17, 32, 33, 65), rows narrower than
a block of output pixels, a dilated kernel (the pixel-by-pixel path), pointwise products with bias,
relu, relu6 and residual epilogues (on depthwise ones too), a general 3x3 convolution, the
direct loops of few input channels in blocks of output pixels, Winograd's F(2x2, 3x3) (odd
sizes, asymmetric padding, partial vectors, a residual, several passes of tiles) and the implicit
GEMM (5x5, 1x1 at a stride, dilation, three panels, windows wholly in the padding, a crop). No
timing here."""
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
from helpers import assert_close, require_tool
from test_simd_kernels import FLAG_PARAMS, FLAG_SETS

DN = ("NHWC", "HWIO", "NHWC")
BATCHES = [1, 3]
EVENT = (9, 11, 17)

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="the flag sets name x86-64 targets")


def _depthwise(x, k, stride, padding, dilation=(1, 1)):
    return lax.conv_general_dilated(x, k, stride, padding, rhs_dilation=dilation, dimension_numbers=DN,
                                    feature_group_count=x.shape[-1])


def _conv(x, k, stride=(1, 1), padding="SAME"):
    return lax.conv_general_dilated(x, k, stride, padding, dimension_numbers=DN)


def relu6(h):
    return jnp.minimum(jax.nn.relu(h), 6.0)


def convs(p, x, reference=False):
    """Every kernel path on one input of 17 channels, 9 x 11 pixels. `reference`: the crop as a
    slice, for JAX to compute: XLA:CPU gets a float32 convolution whose negative low padding is
    followed by positive high padding wrong (openxla/xla#48713: it reads past the row), and under jit
    folds a cropping pad back into the window (openxla/xla#48715)."""
    x33 = jnp.concatenate([x, x[..., :16]], axis=-1)                       # 33 channels
    x32 = x33[..., :32]
    return (
        relu6(_depthwise(x, p["d17"], (1, 1), "SAME") + p["b17"]),          # a partial vector
        jax.nn.relu(_depthwise(x32, p["d32"], (2, 2), ((0, 1), (0, 1))) + p["b32"]),   # asymmetric
        _depthwise(x33, p["d33"], (2, 2), "SAME"),
        _depthwise(x, p["d17"], (1, 1), "SAME") + x,                         # residual
        jnp.tanh(_depthwise(x, p["d17"], (2, 2), "VALID") + p["b17"]),      # another epilogue
        relu6(_depthwise(jnp.concatenate([x33, x32], -1), p["d65"], (1, 1), "SAME")),   # 4 vectors per pixel
        _depthwise(x[:, :, :5, :5], p["d5"], (1, 1), "VALID"),              # rows of 3 pixels
        _depthwise(x[:, :4, :2, :3], p["d3"], (1, 1), ((2, 1), (1, 2))),    # all border pixels
        _depthwise(x[..., :3], p["d3"], (1, 1), "SAME", dilation=(2, 2)),   # the pixel path
        relu6(_conv(x, p["p17_33"]) + p["b33"]),                           # pointwise, relu6
        _conv(x33, p["p33_33"]) + p["b33"] + x33,                          # pointwise, residual
        jax.nn.relu(_conv(x32, p["p32_16"])),                              # pointwise, relu only
        jax.nn.relu(_conv(x[..., :5], p["k5_17"], (2, 2)) + p["b17"]),     # general 3x3
        jax.nn.relu(_conv(x[..., :3], p["k3_32"], (2, 2), ((0, 1), (0, 1))) + p["b32"]),   # direct loops
        _conv(x[..., :1], p["k1_12"]),                                      # direct, 8 + 4 channels
        jax.nn.relu(_conv(x, p["k17_20"]) + p["b20"]),                     # Winograd, odd sizes
        jnp.tanh(_conv(x33, p["k33_18"], padding=((2, 0), (0, 1))) + p["b18"]),   # Winograd, asymmetric
        _conv(x32[..., :16], p["k16_16"], padding="VALID") + x32[:, 1:-1, 1:-1, 16:],   # residual
        _conv(jnp.concatenate([x33, x32], -1), p["k65_65"]),               # Winograd, several passes
        jnp.tanh(_conv(x[..., :6], p["k6_20_5"]) + p["b20"]),              # implicit: 5x5, borders
        _conv(x[..., :16], p["k16_12_1"], (2, 2), "VALID"),                 # implicit: 1x1 at stride 2
        jax.nn.relu(lax.conv_general_dilated(x33, p["k33_33"], (1, 1), "SAME", rhs_dilation=(2, 2),
                                             dimension_numbers=DN) + p["b33"] + x33),   # 3 panels, residual
        _conv(x[..., :7], p["k7_9"], padding=((3, 3), (4, 4))),             # windows wholly in the padding
        (_conv(x[:, 1:, 2:, :7], p["k7_9"], (2, 1), ((0, 0), (0, 1))) if reference   # a crop
         else _conv(x[..., :7], p["k7_9"], (2, 1), ((-1, 0), (-2, 1)))),
    )


def _params():
    rng = np.random.default_rng(24)

    def w(*shape, scale=0.4):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    return {"d17": w(3, 3, 1, 17), "d32": w(3, 3, 1, 32), "d33": w(3, 3, 1, 33), "d5": w(3, 3, 1, 5),
            "d3": w(3, 3, 1, 3), "d65": w(3, 3, 1, 65), "b17": w(17), "b32": w(32), "b33": w(33),
            "p17_33": w(1, 1, 17, 33, scale=0.3), "p33_33": w(1, 1, 33, 33, scale=0.2),
            "p32_16": w(1, 1, 32, 16, scale=0.2), "k5_17": w(3, 3, 5, 17, scale=0.2),
            "k3_32": w(3, 3, 3, 32), "k1_12": w(3, 3, 1, 12), "k17_20": w(3, 3, 17, 20, scale=0.1),
            "b20": w(20), "k33_18": w(3, 3, 33, 18, scale=0.1), "b18": w(18), "k16_16": w(3, 3, 16, 16, scale=0.1),
            "k65_65": w(3, 3, 65, 65, scale=0.05), "k6_20_5": w(5, 5, 6, 20, scale=0.1),
            "k16_12_1": w(1, 1, 16, 12, scale=0.2), "k33_33": w(3, 3, 33, 33, scale=0.05), "k7_9": w(3, 3, 7, 9)}


PARAMS = _params()


@pytest.fixture(scope="module")
def converted():
    x = np.zeros((2, *EVENT), np.float32)
    return j2s.convert(convs, PARAMS, x, name="ConvKernels", batch="dynamic", max_batch=4, progress=False)


def _check(got, x, what):
    want = jax.jit(convs, static_argnums=2)(PARAMS, x, True)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_close(g, np.asarray(w), rtol=1e-4, what=f"output {k}, {what}")


def test_the_model_takes_the_new_kernel_paths(converted):
    header = emit_header(converted.graph)
    assert header.count("detail::conv_depthwise(") == 9
    assert header.count("detail::BiasClamp ") >= 9   # all but the tanh one dispatch
    assert header.count("detail::gemm_packed_with(") >= 3
    assert header.count("+= 4) {") >= 1   # the direct loops' blocks of 4 output pixels
    assert header.count("detail::conv_winograd(") == 4
    assert header.count("detail::conv_implicit(") == 6   # and the general 3x3 at stride 2 (5 channels)
    assert "detail::im2col(" not in header
    # 65 + 65 channels: fewer tiles per pass than a batch of 3 has (3 x 5 x 6 tiles of 2 x 2 pixels)
    tiles = [getattr(op, "winograd", 0) for op in converted.graph.ops if getattr(op, "winograd", 0)]
    assert len(tiles) == 4 and tiles[-1] < 3 * 5 * 6 and 3 * 5 * 6 % tiles[-1]


@pytest.mark.parametrize("flags", FLAG_PARAMS)
def test_conv_kernels_match_jax(converted, flags):
    compiled = converted.compile(flags=FLAG_SETS[flags][0])   # -Werror: conftest's strict mode
    rng = np.random.default_rng(sum(map(ord, flags)))
    for batch in BATCHES:
        x = rng.standard_normal((batch, *EVENT)).astype(np.float32)
        _check(compiled(x), x, f"batch {batch}, {flags}")


def test_plain_float_path_matches_jax(converted, tmp_path):
    """The portability layer's path for compilers without GCC's vector extensions (VecF = float):
    g++ with __GNUC__ undefined once the standard headers are in."""
    cxx = require_tool("g++", "the plain-float path is built with g++")
    converted.generate(str(tmp_path))
    header = (tmp_path / "ConvKernels.hxx").read_text()
    includes = [line for line in header.splitlines() if line.startswith("#include <")]
    batch = 2
    x = np.random.default_rng(5).standard_normal((batch, *EVENT)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    (tmp_path / "main.cpp").write_text("\n".join([
        *includes, "#include <cstdio>", "#undef __GNUC__", '#include "ConvKernels.hxx"',
        "int main() {",
        f'   TMVA_SOFIE_ConvKernels::Session s("{tmp_path}/ConvKernels.dat", {batch});',
        f"   std::vector<float> x({x.size});",
        f'   std::FILE* f = std::fopen("{tmp_path}/x.bin", "rb");',
        "   if (std::fread(x.data(), sizeof(float), x.size(), f) != x.size()) return 1;",
        "   std::fclose(f);",
        f"   const auto y = s.infer({batch}, x.data());",
        f'   std::FILE* o = std::fopen("{tmp_path}/y.bin", "wb");',
        "   for (const auto& v : y) std::fwrite(v.data(), sizeof(float), v.size(), o);",
        "   std::fclose(o);",
        "}", ""]))
    subprocess.run([cxx, "-O1", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-o", str(tmp_path / "main"),
                    str(tmp_path / "main.cpp")], check=True, cwd=tmp_path)
    subprocess.run([str(tmp_path / "main")], check=True)
    flat = np.fromfile(tmp_path / "y.bin", np.float32)
    want = jax.jit(convs, static_argnums=2)(PARAMS, x, True)
    got, at = [], 0
    for w in want:
        got.append(flat[at:at + w.size].reshape(w.shape))
        at += w.size
    assert at == flat.size
    _check(got, x, "plain floats")
