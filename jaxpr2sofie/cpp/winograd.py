"""Winograd's F(2x2, 3x3) for the 3x3 stride-1 convolutions with many input channels.

A 3x3 convolution computes each 2x2 block of output pixels from the 4x4 block of input pixels
under it. Transformed (input: V = B^T d B, kernel: U = G k G^T, both 4x4 per channel), those 36
multiply-adds per input and output channel become 16 elementwise products, summed over the input
channels: 16 matrix products [tiles x Cin] x [Cin x Cout], which the packed product kernel runs at
its usual speed, between an input transform and an output transform (M -> A^T M A, then the
convolution's epilogue as each value is stored). 2.25x fewer multiplications than im2col + GEMM,
and no im2col matrix. The kernel's transform U is computed once, in float64, when the weight file
is written: the weight file holds the 16 [Cin, Cout] matrices in panels (kernels.pack_panels).

Channels last: each transform works on vectors of channels (the portability layer's, simd.py);
compiled for the baseline ISA and for each wider tier a BiasClamp epilogue dispatches to, as the
depthwise kernels are (conv_kernels.py). F(2x2, 3x3)'s transforms only add, subtract and halve, so
its rounding stays that of a float32 sum over 16 rather than 9 products per channel.

Where it is used (`fits`): a 2-D 3x3 kernel at stride 1 without dilation or groups, with at least
MIN_CHANNELS input and output channels (fewer: the direct kernels of conv_loops.py, or too short
a product to pay for the transforms) - measured in benchmarks/conv_algorithms.py.
"""
from __future__ import annotations

import numpy as np

from .kernels import pack_panels
from .simd import dispatch_call, dispatched

# input and output channels from which F(2x2, 3x3) is faster than im2col + the packed product
MIN_CHANNELS = 16
# floats of the transformed input and products held at once (tiles per pass): about 256 KB, in L2
BUDGET = 1 << 16
TRANSFORMS = 16   # the 4x4 elements of a transformed tile
LAYOUT = "winograd2x3"   # a weight's packed layout (Tensor.packed[3]): the transformed kernel

# G of F(2x2, 3x3): U = G k G^T
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def fits(op, g) -> bool:
    """Whether convolution `op` is one F(2x2, 3x3) computes: 2-D, a 3x3 kernel at stride 1, no
    dilation, no groups, at least MIN_CHANNELS channels in and out."""
    n, spatial, cin, ksizes, cg, cout = op.dims(g)
    wins = op.windows(g)
    return (len(spatial) == 2 and tuple(ksizes) == (3, 3) and op.groups == 1
            and all(win.stride == 1 and win.window_dilation == 1 and win.base_dilation == 1 for win in wins)
            and min(cin, cout) >= MIN_CHANNELS)


def tiles_per_pass(op, g) -> int:
    """Output tiles (2x2 pixels) transformed and multiplied per pass: as many as the budget holds,
    at most the whole batch's when the batch is fixed."""
    n, _, cin, _, _, cout = op.dims(g)
    outs = [win.out for win in op.windows(g)]
    block = max(12, BUDGET // (TRANSFORMS * (cin + cout)) // 12 * 12)
    if isinstance(n, int):
        block = min(block, n * (-(-outs[0] // 2)) * (-(-outs[1] // 2)))
    return max(1, block)


def transformed_kernel(k: np.ndarray) -> np.ndarray:
    """A [3, 3, Cin, Cout] kernel as the 16 matrices U[e] = (G k G^T)[e] of [Cin, Cout], float64."""
    u = np.einsum("ai,ijcn,bj->abcn", _G, np.asarray(k, np.float64), _G)
    return u.reshape(TRANSFORMS, *u.shape[2:])


def is_transformed(t) -> bool:
    """Whether weight tensor `t` is stored as its Winograd transform (prepare.py marks it)."""
    return t.packed[3:] == (LAYOUT,)


def stored_chunks(k: np.ndarray):
    """The transformed kernel as the weight file holds it: each U[e] in panels, e by e, in k's dtype."""
    u = transformed_kernel(k)
    for e in range(TRANSFORMS):
        yield pack_panels(u[e].astype(np.asarray(k).dtype)), e == TRANSFORMS - 1


_WINOGRAD = """\
// Winograd F(2x2, 3x3) (winograd.py): 2x2 output pixels per tile, from the 4x4 input pixels under
// it. `block` tiles per pass: their transformed inputs v [16][block][cin], the 16 products
// m[e] = v[e] u[e] ([16][block][cout]), then each tile's 2x2 outputs through the finishing stage f.
// u: the 16 transformed kernels [cin, cout], each in panels.
// The last, partial vector of channels is read and written through one memcpy (tail_load,
// tail_store) rather than lane by lane: the transforms' 32 loads and stores then stay small code,
// which keeps the kernel quick to compile (a one-convolution model: g++ 4.3 s -> 2.0 s at -O3).
inline VecF tail_load(const float* p, int n) {
   if (n >= kLanes)
      return vec_load(p);
   float lanes[kLanes] = {};
   std::memcpy(lanes, p, sizeof(float) * static_cast<size_t>(n));
   return vec_load(lanes);
}
inline void tail_store(float* p, VecF v, int n) {
   if (n >= kLanes) {
      vec_store(p, v);
      return;
   }
   float lanes[kLanes];
   vec_store(lanes, v);
   std::memcpy(p, lanes, sizeof(float) * static_cast<size_t>(n));
}

template <class F>
inline void winograd_rows(const ConvShape& s, const float* x, const float* u, float* y, float* v, float* m, long block,
                          const F& stage) {
   const F f = stage;
   const int C = s.cin, K = s.cout;
   const long H = s.in[1], W = s.in[2], OH = s.out[1], OW = s.out[2];
   const long tw = (OW + 1) / 2, per_image = (OH + 1) / 2 * tw;
   const long tiles = s.n * per_image;
   const int panels = (K + kPanel - 1) / kPanel;
   const long u_stride = static_cast<long>(panels) * kPanel * C;
   for (long first = 0; first < tiles; first += block) {
      const long nt = std::min(block, tiles - first);
      // v = B^T d B per channel, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
      for (long t = 0; t < nt; ++t) {
         const long image = (first + t) / per_image, tile = (first + t) % per_image;
         const long y0 = 2 * (tile / tw) - s.lo[1], x0 = 2 * (tile % tw) - s.lo[2];
         const float* xi = x + image * H * W * C;
         const bool inside = y0 >= 0 && x0 >= 0 && y0 + 4 <= H && x0 + 4 <= W;
         for (int c = 0; c < C; c += kLanes) {
            const int n = C - c;
            VecF d[4][4], r[4][4];
            J2S_UNROLL
            for (int a = 0; a < 4; ++a)
               J2S_UNROLL
               for (int b = 0; b < 4; ++b) {
                  const long yy = y0 + a, xx = x0 + b;
                  d[a][b] = inside || (yy >= 0 && yy < H && xx >= 0 && xx < W)
                            ? tail_load(xi + (yy * W + xx) * C + c, n) : vec_splat(0.f);
               }
            J2S_UNROLL
            for (int b = 0; b < 4; ++b) {
               r[0][b] = d[0][b] - d[2][b];
               r[1][b] = d[1][b] + d[2][b];
               r[2][b] = d[2][b] - d[1][b];
               r[3][b] = d[1][b] - d[3][b];
            }
            J2S_UNROLL
            for (int a = 0; a < 4; ++a) {
               float* va = v + (static_cast<long>(a) * 4 * block + t) * C + c;
               const long e = block * C;   // one transform element to the next
               tail_store(va, r[a][0] - r[a][2], n);
               tail_store(va + e, r[a][1] + r[a][2], n);
               tail_store(va + 2 * e, r[a][2] - r[a][1], n);
               tail_store(va + 3 * e, r[a][1] - r[a][3], n);
            }
         }
      }
      for (int e = 0; e < 16; ++e) {
         const PanelGemm g{nt, K, C, panels, v + e * block * C, u + e * u_stride, static_cast<long>(kPanel) * C, kPanel,
                           nullptr, m + e * block * K};
         panel_gemm(g, Activation<0>{});
      }
      // y = A^T m A per channel, A^T = [1 1 1 0; 0 1 -1 -1], the pixels inside the output only
      for (long t = 0; t < nt; ++t) {
         const long image = (first + t) / per_image, tile = (first + t) % per_image;
         const long oy = 2 * (tile / tw), ox = 2 * (tile % tw);
         const int rows = oy + 1 < OH ? 2 : 1, cols = ox + 1 < OW ? 2 : 1;
         for (int c = 0; c < K; c += kLanes) {
            const int n = K - c;
            VecF q[4][4], p[2][4], o[4];
            J2S_UNROLL
            for (int a = 0; a < 4; ++a)
               J2S_UNROLL
               for (int b = 0; b < 4; ++b)
                  q[a][b] = tail_load(m + ((a * 4 + b) * block + t) * K + c, n);
            J2S_UNROLL
            for (int b = 0; b < 4; ++b) {
               p[0][b] = q[0][b] + q[1][b] + q[2][b];
               p[1][b] = q[1][b] - q[2][b] - q[3][b];
            }
            J2S_UNROLL
            for (int a = 0; a < 2; ++a) {
               o[2 * a] = p[a][0] + p[a][1] + p[a][2];
               o[2 * a + 1] = p[a][1] - p[a][2] - p[a][3];
            }
            for (int i = 0; i < 4; ++i)   // one copy of the epilogue's code, not four
               if (i / 2 < rows && i % 2 < cols) {
                  const long at = ((image * OH + oy + i / 2) * OW + ox + i % 2) * K + c;
                  store_through(f, y + at, o[i], c, at, n);
               }
         }
      }
   }
}

inline void winograd_clamp(const ConvShape& s, const float* x, const float* u, float* y, float* v, float* m, long block,
                           const BiasClamp& e) {
   winograd_rows(s, x, u, y, v, m, block, BiasClampLanes{e});
}
"""

_ENTRIES = """\
// A Winograd F(2x2, 3x3) convolution through a BiasClamp epilogue in the widest vector tier this
// CPU has (simd.py: run-time dispatch), any other epilogue functor in this build's own ISA.
J2S_KERNEL inline void conv_winograd(const ConvShape& s, const float* x, const float* u, float* y, float* v, float* m,
                                     long block, const BiasClamp& e) {
""" + dispatch_call("winograd_clamp(s, x, u, y, v, m, block, e)") + """}
template <class F>
J2S_KERNEL void conv_winograd(const ConvShape& s, const float* x, const float* u, float* y, float* v, float* m,
                              long block, const F& f) {
   base::winograd_rows(s, x, u, y, v, m, block, f);
}
"""

HELPERS = {"winograd": "namespace base {\n" + _WINOGRAD + "}  // namespace base\n" + dispatched(_WINOGRAD) + _ENTRIES}
