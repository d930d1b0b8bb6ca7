"""C++ convolution kernels written once per header, with every size a run-time argument.

Emitting each layer's loops with constant sizes let g++ specialise them, but it then optimised one
loop nest per layer: MobileNetV2's header took a minute to build. Each layer now fills a ConvShape
and calls one of these kernels, so g++ compiles each kernel once whatever the depth of the model;
only register blocks (output pixels per block: registers must be named at compile time) and the
depthwise kernel's epilogue (applied to its accumulators, one copy per stage chain) are template
arguments. Depthwise 3x3 rows run kLanes channels x 4 output pixels at a time, borders apart; with
MobileNet's epilogues (a BiasClamp) they run in the widest vector tier the CPU has, as the products do.

Up to three spatial dimensions; fewer are padded with size-1 dimensions in front.
Channels last: input [N, D, H, W, Cin], output [N, OD, OH, OW, Cout].
"""
from __future__ import annotations

from ..ir.ops.conv import SPATIAL, TAP_ROWS   # spatial dimensions of a ConvShape; kTapRows
from .simd import dispatch_call, dispatched

_CONV = """\
// A convolution's sizes: three spatial dimensions (size 1 where the model has fewer).
struct ConvShape {
   long n;                 // images
   int in[3], out[3];      // spatial sizes of input and output
   int k[3];               // kernel taps
   int stride[3], lo[3];   // stride and low padding (negative: a crop)
   int dil[3];             // kernel (rhs) dilation
   int lhs[3];             // input (lhs) dilation: 1 but for transposed convolutions
   int cin, cout;
   long pixels() const { return static_cast<long>(out[0]) * out[1] * out[2]; }
};

// Taps [t0, t1) of one output position along one dimension whose input position
// base + t * dil lies inside [0, size).
inline void tap_range(long base, int size, int taps, int dil, int& t0, int& t1) {
   if (dil == 1) {   // the usual case, without the divisions (they cost more than a small pixel)
      t0 = base >= 0 ? 0 : static_cast<int>(-base);
      t1 = base > size - 1 ? 0 : static_cast<int>(std::min<long>(taps, size - base));
      return;
   }
   t0 = base >= 0 ? 0 : static_cast<int>((-base + dil - 1) / dil);
   t1 = base > size - 1 ? 0 : static_cast<int>(std::min<long>(taps, (size - 1 - base) / dil + 1));
}

// Where an output pixel's window starts and which of its taps are real, per dimension.
struct Window3 {
   long base[3];
   int t0[3], t1[3];
   Window3(const ConvShape& s, const int* o) {
      for (int d = 0; d < 3; ++d) {
         base[d] = static_cast<long>(o[d]) * s.stride[d] - s.lo[d];
         tap_range(base[d], s.in[d], s.k[d], s.dil[d], t0[d], t1[d]);
      }
   }
};

// The kernel rows (taps of the dimensions before the last) of one output row that fall inside the
// input: where each starts in the image and in the kernel. At most kTapRows, else the pixel path.
constexpr int kTapRows = @TAP_ROWS@;
struct TapRows {
   int count = 0;
   long x[kTapRows], k[kTapRows];
   TapRows(const ConvShape& s, const Window3& w) {
      for (int a = w.t0[0]; a < w.t1[0]; ++a)
         for (int b = w.t0[1]; b < w.t1[1] && count < kTapRows; ++b, ++count) {
            x[count] = ((w.base[0] + a * s.dil[0]) * s.in[1] + w.base[1] + b * s.dil[1]) * s.in[2] * s.cin;
            k[count] = (static_cast<long>(a) * s.k[1] + b) * s.k[2] * s.cin;
         }
   }
};

// Output pixels of a depthwise row computed together (depthwise_run3), and channel vectors of one
// pixel (depthwise_pixel).
constexpr int kDepthwisePixels = 4;
constexpr int kPixelVecs = 4;

// Input position of tap t of output o along dimension d in the (lhs-dilated, padded) input,
// as an index into the real input, or -1 where it falls on padding or a dilation hole.
inline long input_at(const ConvShape& s, int d, long o, long t) {
   const long p = o * s.stride[d] + t * s.dil[d] - s.lo[d];
   if (s.lhs[d] == 1)   // no holes: no division
      return p >= 0 && p < s.in[d] ? p : -1;
   const long dilated = s.in[d] ? (static_cast<long>(s.in[d]) - 1) * s.lhs[d] + 1 : 0;
   if (p < 0 || p >= dilated || p % s.lhs[d] != 0)
      return -1;
   return p / s.lhs[d];
}

// im2col for `nb` images from image `n0`: row (image, output pixel), column (tap, channel) over the
// `cg` input channels from channel `c0`; zero where a tap falls on padding or a dilation hole.
// A row of taps along the last dimension that reads consecutive whole pixels is one copy.
J2S_KERNEL inline void im2col(const ConvShape& s, const float* x, float* col, long n0, long nb, int c0, int cg) {
   const bool runs = s.lhs[2] == 1 && s.dil[2] == 1 && cg == s.cin;
   const long row = static_cast<long>(s.k[2]) * cg;   // floats per row of taps
   float* dst = col;
   for (long n = n0; n < n0 + nb; ++n)
      for (int o0 = 0; o0 < s.out[0]; ++o0)
         for (int o1 = 0; o1 < s.out[1]; ++o1)
            for (int o2 = 0; o2 < s.out[2]; ++o2)
               for (int a = 0; a < s.k[0]; ++a)
                  for (int b = 0; b < s.k[1]; ++b, dst += row) {
                     const long p0 = input_at(s, 0, o0, a), p1 = input_at(s, 1, o1, b);
                     if (p0 < 0 || p1 < 0) {
                        std::fill_n(dst, row, 0.f);
                        continue;
                     }
                     const float* src = x + ((n * s.in[0] + p0) * s.in[1] + p1) * s.in[2] * s.cin + c0;
                     if (runs) {
                        int t0, t1;
                        tap_range(static_cast<long>(o2) * s.stride[2] - s.lo[2], s.in[2], s.k[2], 1, t0, t1);
                        t0 = std::min(t0, s.k[2]);   // a window wholly in the padding: t0 may pass the end
                        t1 = std::max(t0, t1);
                        std::fill_n(dst, static_cast<long>(t0) * cg, 0.f);
                        std::copy_n(src + (static_cast<long>(o2) * s.stride[2] - s.lo[2] + t0) * cg,
                                    static_cast<long>(t1 - t0) * cg, dst + static_cast<long>(t0) * cg);
                        std::fill_n(dst + static_cast<long>(t1) * cg, static_cast<long>(s.k[2] - t1) * cg, 0.f);
                        continue;
                     }
                     for (int t = 0; t < s.k[2]; ++t) {
                        const long p2 = input_at(s, 2, o2, t);
                        if (p2 < 0)
                           std::fill_n(dst + static_cast<long>(t) * cg, cg, 0.f);
                        else
                           std::copy_n(src + p2 * s.cin, cg, dst + static_cast<long>(t) * cg);
                     }
                  }
}
"""

# The depthwise kernels, written with the portability layer's vectors: compiled for the baseline ISA
# (any epilogue functor) and again for each wider tier a BiasClamp epilogue dispatches to (simd.py).
_DEPTHWISE = """\
// One output pixel of a depthwise convolution (kernel [K..., C]), channels from c0: kLanes
// channels at a time over the taps inside the input, the last vector of a row in part, through the
// finishing stage f as they are stored (y is element `at` of the output). The general case (any
// kernel, dilation), and the border pixels and last partial vector of the row kernel below.
template <class F>
inline void depthwise_pixel(const ConvShape& s, const Window3& w, const float* x, const float* k, float* y, long at,
                            const F& f, int c0 = 0) {
   const int C = s.cout;
   int c = c0;
   for (; c + kPixelVecs * kLanes <= C; c += kPixelVecs * kLanes) {   // independent FMA chains
      VecF acc[kPixelVecs];
      J2S_UNROLL
      for (int v = 0; v < kPixelVecs; ++v)
         acc[v] = vec_splat(0.f);
      for (int a = w.t0[0]; a < w.t1[0]; ++a)
         for (int b = w.t0[1]; b < w.t1[1]; ++b) {
            const float* xr = x + ((w.base[0] + a * s.dil[0]) * s.in[1] + w.base[1] + b * s.dil[1]) * s.in[2] * C + c;
            const float* kr = k + (static_cast<long>(a) * s.k[1] + b) * s.k[2] * C + c;
            for (int t = w.t0[2]; t < w.t1[2]; ++t) {
               const float* xt = xr + (w.base[2] + t * s.dil[2]) * C;
               const float* kt = kr + static_cast<long>(t) * C;
               J2S_UNROLL
               for (int v = 0; v < kPixelVecs; ++v)
                  acc[v] += vec_load(xt + v * kLanes) * vec_load(kt + v * kLanes);
            }
         }
      J2S_UNROLL
      for (int v = 0; v < kPixelVecs; ++v)
         store_through(f, y + c + v * kLanes, acc[v], c + v * kLanes, at + c + v * kLanes, kLanes);
   }
   for (; c < C; c += kLanes) {
      const int n = C - c;
      VecF acc = vec_splat(0.f);
      for (int a = w.t0[0]; a < w.t1[0]; ++a)
         for (int b = w.t0[1]; b < w.t1[1]; ++b) {
            const float* xr = x + ((w.base[0] + a * s.dil[0]) * s.in[1] + w.base[1] + b * s.dil[1]) * s.in[2] * C + c;
            const float* kr = k + (static_cast<long>(a) * s.k[1] + b) * s.k[2] * C + c;
            for (int t = w.t0[2]; t < w.t1[2]; ++t)
               acc += vec_load_part(xr + (w.base[2] + t * s.dil[2]) * C, n) * vec_load_part(kr + static_cast<long>(t) * C, n);
         }
      store_through(f, y + c, acc, c, at + c, n);
   }
}

// P neighbouring output pixels of a row whose 3 taps along it are all inside the input (stride S,
// the first window starting at input pixel x), the whole channel vectors (the partial one goes
// through depthwise_pixel). The P x 3 taps of a kernel row share its 3 weights and, at stride 1,
// their input vectors: P + 2 (stride 2: 2 P + 1) loads feed 3 P FMAs into P accumulators held in
// registers, finished by f as they are stored (y: element `at` of the output).
template <int S, int P, class F>
inline void depthwise_run3(const TapRows& rows, int C, const float* x, const float* k, float* y, long at, const F& f) {
   constexpr int kCols = (P - 1) * S + 3;   // input pixels the P windows cover
   for (int c = 0; c + kLanes <= C; c += kLanes) {
      VecF acc[P];
      J2S_UNROLL
      for (int p = 0; p < P; ++p)
         acc[p] = vec_splat(0.f);
      for (int r = 0; r < rows.count; ++r) {
         const float* xr = x + rows.x[r] + c;
         const float* kr = k + rows.k[r] + c;
         VecF kv[3], xv[kCols];
         J2S_UNROLL
         for (int t = 0; t < 3; ++t)
            kv[t] = vec_load(kr + t * C);
         J2S_UNROLL
         for (int q = 0; q < kCols; ++q)
            xv[q] = vec_load(xr + static_cast<long>(q) * C);
         J2S_UNROLL
         for (int p = 0; p < P; ++p)
            J2S_UNROLL
            for (int t = 0; t < 3; ++t)
               acc[p] += xv[p * S + t] * kv[t];
      }
      J2S_UNROLL
      for (int p = 0; p < P; ++p)
         store_through(f, y + static_cast<long>(p) * C + c, acc[p], c, at + static_cast<long>(p) * C + c, kLanes);
   }
}

// One row of output pixels: a kernel 3 wide along the row at stride S, the pixels whose windows lie
// inside the input in blocks of kDepthwisePixels, the others (borders) one by one.
template <int S, class F>
inline void depthwise_row3(const ConvShape& s, int o0, int o1, const float* x, const float* k, float* y, long at,
                           const F& f) {
   const int o[3] = {o0, o1, 0};
   Window3 w(s, o);
   const TapRows rows(s, w);
   // interior: 0 <= o2 * S - lo and o2 * S - lo + 2 <= in - 1
   const int lo = std::min(s.out[2], s.lo[2] > 0 ? (s.lo[2] + S - 1) / S : 0);
   const int hi = std::max(lo, std::min(s.out[2], s.in[2] - 3 + s.lo[2] >= 0 ? (s.in[2] - 3 + s.lo[2]) / S + 1 : 0));
   const int C = s.cout;
   const int whole = C / kLanes * kLanes;
   auto pixel = [&](int o2, int c0) {   // output pixel o2 from channel c0, taps checked
      w.base[2] = static_cast<long>(o2) * S - s.lo[2];
      tap_range(w.base[2], s.in[2], 3, 1, w.t0[2], w.t1[2]);
      depthwise_pixel(s, w, x, k, y + static_cast<long>(o2) * C, at + static_cast<long>(o2) * C, f, c0);
   };
   auto block = [&](int o2, auto pixels) {   // `pixels` interior output pixels from o2
      constexpr int P = decltype(pixels)::value;
      depthwise_run3<S, P>(rows, C, x + (static_cast<long>(o2) * S - s.lo[2]) * C, k, y + static_cast<long>(o2) * C,
                           at + static_cast<long>(o2) * C, f);
      for (int p = 0; whole < C && p < P; ++p)
         pixel(o2 + p, whole);
   };
   int o2 = 0;
   for (; o2 < lo; ++o2)
      pixel(o2, 0);
   for (; o2 + kDepthwisePixels <= hi; o2 += kDepthwisePixels)
      block(o2, std::integral_constant<int, kDepthwisePixels>{});
   for (; o2 < hi; ++o2)
      block(o2, std::integral_constant<int, 1>{});
   for (; o2 < s.out[2]; ++o2)
      pixel(o2, 0);
}

// A depthwise convolution (one input channel per output channel, Cin == Cout), kernel [K..., C],
// row by row, its epilogue F applied to the accumulators as they are stored. Kernels 3 wide along
// the row at stride 1 or 2 (MobileNet's) go through depthwise_row3, the others pixel by pixel.
template <class F>
inline void depthwise_rows(const ConvShape& s, const float* x, const float* k, float* y, const F& f) {
   const long image_in = static_cast<long>(s.in[0]) * s.in[1] * s.in[2] * s.cin;
   const long C = s.cout;
   const bool row3 = s.k[2] == 3 && s.dil[2] == 1 && (s.stride[2] == 1 || s.stride[2] == 2)
                     && static_cast<long>(s.k[0]) * s.k[1] <= kTapRows;
   for (long n = 0; n < s.n; ++n)
      for (int o0 = 0; o0 < s.out[0]; ++o0)
         for (int o1 = 0; o1 < s.out[1]; ++o1) {
            const long at = ((n * s.out[0] + o0) * s.out[1] + o1) * s.out[2] * C;   // the row's first element
            const float* xi = x + n * image_in;
            if (row3 && s.stride[2] == 1) {
               depthwise_row3<1>(s, o0, o1, xi, k, y + at, at, f);
            } else if (row3) {
               depthwise_row3<2>(s, o0, o1, xi, k, y + at, at, f);
            } else {
               for (int o2 = 0; o2 < s.out[2]; ++o2) {
                  const int o[3] = {o0, o1, o2};
                  depthwise_pixel(s, Window3(s, o), xi, k, y + at + o2 * C, at + o2 * C, f);
               }
            }
         }
}

"""

# Per copy: the depthwise kernel through a BiasClamp (simd.py) in that copy's vectors.
_DEPTHWISE_CLAMP = """\
inline void depthwise_clamp(const ConvShape& s, const float* x, const float* k, float* y, const BiasClamp& e) {
   depthwise_rows(s, x, k, y, BiasClampLanes{e});
}
"""

# The entries in detail, whose names no copy uses, so that an argument-dependent lookup finds no
# second candidate; the copies in namespace base and in the tiers' namespaces (as the products').
_DEPTHWISE_ENTRIES = """\
// A depthwise convolution through a BiasClamp epilogue in the widest vector tier this CPU has
// (simd.py: run-time dispatch), any other epilogue functor in this build's own ISA. Compiled once
// per epilogue type, whatever the number of layers.
J2S_KERNEL inline void conv_depthwise(const ConvShape& s, const float* x, const float* k, float* y, const BiasClamp& e) {
""" + dispatch_call("depthwise_clamp(s, x, k, y, e)") + """}
template <class F>
J2S_KERNEL void conv_depthwise(const ConvShape& s, const float* x, const float* k, float* y, const F& f) {
   base::depthwise_rows(s, x, k, y, f);
}
"""
_CONV = (_CONV + "namespace base {\n" + _DEPTHWISE + _DEPTHWISE_CLAMP + "}  // namespace base\n"
         + dispatched(_DEPTHWISE + _DEPTHWISE_CLAMP) + _DEPTHWISE_ENTRIES)
HELPERS = {"conv": _CONV.replace("@TAP_ROWS@", str(TAP_ROWS))}

# The epilogue of a convolution that is not applied in registers: a kernel of its own, compiled once
# per stage chain and called through a pointer (the packed product calls it on each stored tile).
EPILOGUE = """\
// Elementwise stages applied to each block of output rows while it is in cache (see epilogue.py):
// a function per stage combination, reached through a pointer so the kernels are compiled once.
struct Epilogue {
   void (*fn)(const void*, float*, long, long, int, int, long) = nullptr;
   const void* stages = nullptr;
   // `rows` rows of `cout` floats at y, which is element `at` of the output tensor
   void operator()(float* y, long at, long rows, int cout) const {
      if (fn) fn(stages, y, at, rows, cout, 0, cout);
   }
   // columns [c0, c0 + cols) of `rows` rows ld floats apart: a product's register tile, just stored
   void tile(float* y, long at, long rows, int cols, int c0, long ld) const {
      if (fn) fn(stages, y, at, rows, cols, c0, ld);
   }
};

// Compiled once per stage chain (J2S_KERNEL): inlined where a call's sizes are constants, g++ 12
// vectorises short channel loops across rows instead, with permutes (several times slower). A chain
// with a vector form (E::kVectors) runs on whole vectors of channels, the last one of a row in part,
// so that every channel gets the same code and -O2 the speed of -O3.
template <class E>
J2S_KERNEL void run_epilogue(const void* stages, float* y, long at, long rows, int cols, int c0, long ld) {
   const E& e = *static_cast<const E*>(stages);
   for (long r = 0; r < rows; ++r) {
      float* yr = y + r * ld;
      const long base = at + r * ld;
      for (int c = 0; c < cols; c += kLanes)
         store_through(e, yr + c, vec_load_part(yr + c, cols - c), c0 + c, base + c, cols - c);
   }
}

template <class E>
Epilogue epilogue_of(const E& e) { return Epilogue{&run_epilogue<E>, &e}; }
"""


def shape_literal(n, spatial, outs, ksizes, strides, lows, dil, lhs, cin, cout) -> str:
    """`detail::ConvShape{...}` for a convolution of 1 to 3 spatial dimensions (size-1 ones in front)."""
    pad = SPATIAL - len(spatial)
    assert 0 <= pad, "at most three spatial dimensions"

    def arr(values, fill):
        return "{" + ", ".join(str(v) for v in [fill] * pad + list(values)) + "}"

    return (f"detail::ConvShape{{static_cast<long>({n}), {arr(spatial, 1)}, {arr(outs, 1)}, {arr(ksizes, 1)}, "
            f"{arr(strides, 1)}, {arr(lows, 0)}, {arr(dil, 1)}, {arr(lhs, 1)}, {cin}, {cout}}}")
