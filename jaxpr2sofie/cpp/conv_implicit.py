"""Implicit GEMM: a convolution's product read straight from the input, without an im2col matrix.

im2col + GEMM first copies every output pixel's window into a row of a [pixels, taps x Cin] matrix
(for a 3x3 kernel, nine copies of the input), then multiplies it by the kernel. Channels last, the
window of an output pixel along one kernel tap is already a contiguous run of Cin input values: the
kernel here multiplies those runs in place. A register tile of kTileRows neighbouring output pixels
of one output row x one panel of 16 output channels (the packed kernel's layout, the one the
im2col product reads) accumulates over every kernel tap inside the input and every input channel,
then goes through the convolution's epilogue as it is stored. Pixels whose window sits on the
padding along the row go one at a time, their taps cut to those inside the input, their sums split
over several FMA chains; kernel rows over the padding (the other dimensions) are skipped.

Used for convolutions without groups or input dilation whose kernel the C++ preparation packs
(cpp/prepare.py) and whose kernel rows number at most kTapRows, Winograd's aside: 3x3 at stride 2,
few channels (5 to 15), 1x1 at a stride, 5x5 and others. Dispatched per vector tier as the
depthwise kernels are (conv_kernels.py).
"""
from __future__ import annotations

from .simd import dispatch_call, dispatched

_IMPLICIT = """\
// R output pixels of one row (their windows `step` floats apart, the first one's tap t0 at input
// offset x0 of the image xi) against one panel of the packed kernel b: taps [t0, t1) along the row
// of each kernel row inside the input, every input channel; stored through f (y, at: the first
// pixel's first channel of this panel, c0 its channel, cols the panel's columns in the output).
template <int R, class F>
J2S_KERNEL void implicit_tile(const ConvShape& s, const TapRows& rows, const float* xi, long x0, long step, int t0,
                              int t1, const float* b, float* y, long at, int c0, int cols, const F& f) {
   const int C = s.cin;
   const long tstep = static_cast<long>(s.dil[2]) * C;
   VecF acc[R][kPanelVecs] = {};
   for (int q = 0; q < rows.count; ++q)
      for (int t = t0; t < t1; ++t) {
         const float* a = xi + (x0 + rows.x[q] + t * tstep);
         const float* bk = b + (rows.k[q] + static_cast<long>(t) * C) * kPanel;
         for (int c = 0; c < C; ++c) {
            VecF bv[kPanelVecs];
            J2S_UNROLL
            for (int v = 0; v < kPanelVecs; ++v)
               bv[v] = vec_load(bk + static_cast<long>(c) * kPanel + v * kLanes);
            J2S_UNROLL
            for (int r = 0; r < R; ++r) {
               const VecF ar = vec_splat(a[r * step + c]);
               J2S_UNROLL
               for (int v = 0; v < kPanelVecs; ++v)
                  acc[r][v] += ar * bv[v];
            }
         }
      }
   // stored row by row from a copy in memory, one copy of the epilogue's code rather than R: the
   // kernel compiles faster, and the accumulators stay in registers while they sum
   VecF out[R][kPanelVecs];
   J2S_UNROLL
   for (int r = 0; r < R; ++r)
      J2S_UNROLL
      for (int v = 0; v < kPanelVecs; ++v)
         out[r][v] = acc[r][v];
   for (int r = 0; r < R; ++r)
      for (int v = 0; v < kPanelVecs; ++v)
         store_through(f, y + static_cast<long>(r) * s.cout + v * kLanes, out[r][v], c0 + v * kLanes,
                       at + static_cast<long>(r) * s.cout + v * kLanes, cols - v * kLanes);
}

// One output pixel (a border one: taps [t0, t1) along the row) against one panel, its sum split over
// kRowSplit FMA chains by input channel so that they run at once.
template <class F>
J2S_KERNEL void implicit_pixel(const ConvShape& s, const TapRows& rows, const float* xi, long x0, int t0, int t1,
                               const float* b, float* y, long at, int c0, int cols, const F& f) {
   const int C = s.cin;
   const long tstep = static_cast<long>(s.dil[2]) * C;
   VecF acc[kRowSplit][kPanelVecs] = {};
   for (int q = 0; q < rows.count; ++q)
      for (int t = t0; t < t1; ++t) {
         const float* a = xi + (x0 + rows.x[q] + t * tstep);
         const float* bk = b + (rows.k[q] + static_cast<long>(t) * C) * kPanel;
         int c = 0;
         for (; c + kRowSplit <= C; c += kRowSplit)
            J2S_UNROLL
            for (int u = 0; u < kRowSplit; ++u) {
               const VecF ar = vec_splat(a[c + u]);
               J2S_UNROLL
               for (int v = 0; v < kPanelVecs; ++v)
                  acc[u][v] += ar * vec_load(bk + static_cast<long>(c + u) * kPanel + v * kLanes);
            }
         for (; c < C; ++c) {
            const VecF ar = vec_splat(a[c]);
            J2S_UNROLL
            for (int v = 0; v < kPanelVecs; ++v)
               acc[0][v] += ar * vec_load(bk + static_cast<long>(c) * kPanel + v * kLanes);
         }
      }
   J2S_UNROLL
   for (int v = 0; v < kPanelVecs; ++v) {
      J2S_UNROLL
      for (int u = 1; u < kRowSplit; ++u)
         acc[0][v] += acc[u][v];
      store_through(f, y + v * kLanes, acc[0][v], c0 + v * kLanes, at + v * kLanes, cols - v * kLanes);
   }
}

// The n interior pixels left after the whole tiles (fewer than kTileRows): one tile of them all.
template <class F>
inline void implicit_rest(int n, const ConvShape& s, const TapRows& rows, const float* xi, long x0, long step,
                          const float* b, float* y, long at, int c0, int cols, const F& f) {
   const int k = s.k[2];
   if constexpr (kTileRows > 6) {
      switch (n) {
      case 11: implicit_tile<11>(s, rows, xi, x0, step, 0, k, b, y, at, c0, cols, f); return;
      case 10: implicit_tile<10>(s, rows, xi, x0, step, 0, k, b, y, at, c0, cols, f); return;
      case 9: implicit_tile<9>(s, rows, xi, x0, step, 0, k, b, y, at, c0, cols, f); return;
      case 8: implicit_tile<8>(s, rows, xi, x0, step, 0, k, b, y, at, c0, cols, f); return;
      case 7: implicit_tile<7>(s, rows, xi, x0, step, 0, k, b, y, at, c0, cols, f); return;
      case 6: implicit_tile<6>(s, rows, xi, x0, step, 0, k, b, y, at, c0, cols, f); return;
      default: break;
      }
   }
   switch (n) {
   case 5: implicit_tile<5>(s, rows, xi, x0, step, 0, k, b, y, at, c0, cols, f); break;
   case 4: implicit_tile<4>(s, rows, xi, x0, step, 0, k, b, y, at, c0, cols, f); break;
   case 3: implicit_tile<3>(s, rows, xi, x0, step, 0, k, b, y, at, c0, cols, f); break;
   case 2: implicit_tile<2>(s, rows, xi, x0, step, 0, k, b, y, at, c0, cols, f); break;
   case 1: implicit_pixel(s, rows, xi, x0, 0, k, b, y, at, c0, cols, f); break;
   default: break;
   }
}

// Every output row (image, the spatial dimensions before the last), panel by panel: the interior
// pixels (whole window inside the input along the row) in tiles, the border ones alone.
template <class F>
inline void implicit_rows(const ConvShape& s, const float* x, const float* k, float* y, const F& stage) {
   const F f = stage;
   const int C = s.cin, K = s.cout, S = s.stride[2], W = s.out[2];
   const long image_in = static_cast<long>(s.in[0]) * s.in[1] * s.in[2] * C;
   const long kc = static_cast<long>(s.k[0]) * s.k[1] * s.k[2] * C;   // rows of a panel
   const long step = static_cast<long>(S) * C;
   const long span = static_cast<long>(s.k[2] - 1) * s.dil[2];
   // interior: 0 <= o2 * S - lo and o2 * S - lo + span <= in - 1
   const int lo = std::min<long>(W, s.lo[2] > 0 ? (s.lo[2] + S - 1) / S : 0);
   const long last = s.in[2] - 1 - span + s.lo[2];
   const int hi = std::max<long>(lo, std::min<long>(W, last >= 0 ? last / S + 1 : 0));
   for (long n = 0; n < s.n; ++n)
      for (int o0 = 0; o0 < s.out[0]; ++o0)
         for (int o1 = 0; o1 < s.out[1]; ++o1) {
            const int o[3] = {o0, o1, 0};
            const TapRows rows(s, Window3(s, o));
            const long at = ((n * s.out[0] + o0) * s.out[1] + o1) * static_cast<long>(W) * K;   // the row's first element
            const float* xi = x + n * image_in;
            for (int c0 = 0; c0 < K; c0 += kPanel) {
               const float* b = k + c0 * kc;   // panel c0 / kPanel
               const int cols = std::min(kPanel, K - c0);
               auto pixel = [&](int o2) {
                  const long base = static_cast<long>(o2) * S - s.lo[2];
                  int t0, t1;
                  tap_range(base, s.in[2], s.k[2], s.dil[2], t0, t1);
                  const long out = at + static_cast<long>(o2) * K + c0;
                  implicit_pixel(s, rows, xi, base * C, t0, std::max(t0, t1), b, y + out, out, c0, cols, f);
               };
               int o2 = 0;
               for (; o2 < lo; ++o2)
                  pixel(o2);
               for (; o2 + kTileRows <= hi; o2 += kTileRows) {
                  const long out = at + static_cast<long>(o2) * K + c0;
                  implicit_tile<kTileRows>(s, rows, xi, (static_cast<long>(o2) * S - s.lo[2]) * C, step, 0, s.k[2], b,
                                           y + out, out, c0, cols, f);
               }
               if (o2 < hi) {
                  const long out = at + static_cast<long>(o2) * K + c0;
                  implicit_rest(hi - o2, s, rows, xi, (static_cast<long>(o2) * S - s.lo[2]) * C, step, b, y + out, out,
                                c0, cols, f);
                  o2 = hi;
               }
               for (; o2 < W; ++o2)
                  pixel(o2);
            }
         }
}

inline void implicit_clamp(const ConvShape& s, const float* x, const float* k, float* y, const BiasClamp& e) {
   implicit_rows(s, x, k, y, BiasClampLanes{e});
}
"""

_ENTRIES = """\
// A convolution as an implicit GEMM (conv_implicit.py) on its packed kernel, through a BiasClamp
// epilogue in the widest vector tier this CPU has (simd.py), any other epilogue functor in this
// build's own ISA.
J2S_KERNEL inline void conv_implicit(const ConvShape& s, const float* x, const float* k, float* y, const BiasClamp& e) {
""" + dispatch_call("implicit_clamp(s, x, k, y, e)") + """}
template <class F>
J2S_KERNEL void conv_implicit(const ConvShape& s, const float* x, const float* k, float* y, const F& f) {
   base::implicit_rows(s, x, k, y, f);
}
"""

HELPERS = {"conv_implicit": "namespace base {\n" + _IMPLICIT + "}  // namespace base\n" + dispatched(_IMPLICIT) + _ENTRIES}
