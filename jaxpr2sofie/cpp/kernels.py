"""C++ kernels of the matrix products, carried by a header only when its code calls them
(`Writer.need`), inside the model's own namespace so several headers can share a translation unit.

A product by a weight matrix (a dense layer) reads that matrix *packed*: stored in the weight file
as panels of PANEL columns, [ceil(N/PANEL)][K][PANEL] with the last panel zero-padded. Each step
of the inner loop then reads PANEL contiguous weights into vector registers and multiplies them by
one broadcast input value per row, accumulating a tile of rows x PANEL outputs in registers; the
bias and activation are applied to the tile before it is stored (the product's epilogue). The
vectors and the tile's unrolling are explicit (simd.py, the one portability layer), so that -O2
with the baseline ISA runs the code -O3 -march=native does. On this project's reference machine
(2-core AMD EPYC, AVX2) this beats both plain loops and OpenBLAS from batch 1 to batch 256 for the
layer sizes of HEP models; products of two activations still go to loops or BLAS.
"""
from __future__ import annotations

import numpy as np

from .conv_kernels import EPILOGUE
from .simd import SIMD, dispatch_call, dispatched
from .vmath import VMATH

PANEL = 16

BLAS_DECL = """\
#ifndef J2S_SGEMM
#define J2S_SGEMM sgemm_
#endif
extern "C" void J2S_SGEMM(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                          const float* alpha, const float* A, const int* lda, const float* B, const int* ldb,
                          const float* beta, float* C, const int* ldc);
"""

# Helpers a header carries only when its code calls them (Writer.need), inside the model's own
# namespace so several headers can share a translation unit.
_GEMM_LOOPS = """\
// Row-major C = op(A) * op(B) + beta * C (beta is 0 or 1) as plain loops: for the small products
// of batch-1 inference a BLAS call costs more than the arithmetic.
inline void gemm_loops(bool ta, bool tb, int M, int N, int K, const float* A, const float* B, float beta, float* C) {
   for (int i = 0; i < M; ++i) {
      float* c = C + static_cast<long>(i) * N;
      if (beta == 0.f)
         std::fill_n(c, N, 0.f);
      if (tb) {
         for (int j = 0; j < N; ++j) {
            const float* b = B + static_cast<long>(j) * K;
            float acc = 0.f;
            for (int k = 0; k < K; ++k)
               acc += (ta ? A[static_cast<long>(k) * M + i] : A[static_cast<long>(i) * K + k]) * b[k];
            c[j] += acc;
         }
      } else {
         for (int k = 0; k < K; ++k) {
            const float a = ta ? A[static_cast<long>(k) * M + i] : A[static_cast<long>(i) * K + k];
            const float* b = B + static_cast<long>(k) * N;
            for (int j = 0; j < N; ++j)
               c[j] += a * b[j];
         }
      }
   }
}
"""

_GEMM_BLAS = """\
// Row-major C = op(A) * op(B) + beta * C through BLAS, in column-major form (C^T = op(B)^T op(A)^T).
inline void gemm_blas(bool ta, bool tb, int M, int N, int K, const float* A, const float* B, float beta, float* C) {
   const float alpha = 1.f;
   const int lda = ta ? M : K, ldb = tb ? K : N;
   J2S_SGEMM(tb ? "T" : "N", ta ? "T" : "N", &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &N);
}
"""

# Epilogues a packed product applies to its output tile: ACT is the template argument.
ACTIVATIONS = {"": 0, "relu": 1}

_PANEL_TYPES = """\
// C[M,N] = act(A[M,K] * B + bias) with B in panels of kPanel columns. Each step of a tile's inner
// loop loads one panel row into registers and multiplies it by one broadcast value per row of A,
// accumulating rows x kPanel outputs in registers (the portability layer's vectors, unrolled by
// J2S_UNROLL, so at -O2 as at -O3); the bias and activation are applied as the tile is stored.
constexpr int kPanel = 16;                    // columns per panel: the packed weights' layout
// A product whose B is a sequence of panels: panel p starts at b + p * panel_stride and its rows
// are ldb floats apart (packed weights: kPanel; a row-major activation read in place: n).
struct PanelGemm {
   long m;                  // rows of A and C
   int n, k;                // columns of C; columns of A = rows of B
   int panels;              // panels of B to multiply (the columns past them are not touched)
   const float* a;          // [m, k], row-major
   const float* b;
   long panel_stride, ldb;
   const float* bias;       // [n], or nullptr
   float* c;                // [m, n], row-major
   long at = 0;             // c's first element is this element of the output tensor
   Epilogue epi = {};       // a convolution's epilogue, applied to each tile once stored (in L1)
};
"""

# The kernels proper, written with the portability layer's vectors: compiled for the baseline ISA and
# again for each wider tier the products dispatch to (simd.dispatched).
_PANEL_KERNELS = """\
constexpr int kPanelVecs = kPanel / kLanes;   // vectors per panel row
constexpr int kRowSplit = kPanelVecs < 8 ? 8 / kPanelVecs : 1;   // partial sums of a lone row

// Rows [row, row + R) of C, panel `panel`: acc[r][v] plus bias, through the finishing stage F
// (simd.py) as the tile is stored. The
// last panel of a row may be narrower than kPanel: its vectors are read and written in part.
template <int R, class F>
inline void store_tile(const VecF (&acc)[R][kPanelVecs], const PanelGemm& g, long row, int panel, const F& f) {
   const int first = panel * kPanel;
   const int cols = std::min(kPanel, g.n - first);
   VecF bias[kPanelVecs] = {};
   if (g.bias) {
      J2S_UNROLL
      for (int v = 0; v < kPanelVecs; ++v)
         bias[v] = vec_load_part(g.bias + first + v * kLanes, cols - v * kLanes);
   }
   for (int r = 0; r < R; ++r) {
      float* c = g.c + (row + r) * g.n + first;
      const long at = g.at + (row + r) * g.n + first;   // element of the output tensor
      J2S_UNROLL
      for (int v = 0; v < kPanelVecs; ++v) {
         store_through(f, c + v * kLanes, acc[r][v] + bias[v], first + v * kLanes, at + v * kLanes, cols - v * kLanes);
      }
   }
   g.epi.tile(g.c + row * g.n + first, g.at + row * g.n + first, R, cols, first, g.n);
}

// Rows [row, row + R) against one panel: R x kPanelVecs independent FMA chains.
template <int R, class F>
inline void panel_tile(const PanelGemm& g, long row, int panel, const F& f) {
   const float* a = g.a + row * g.k;
   const float* b = g.b + panel * g.panel_stride;
   VecF acc[R][kPanelVecs] = {};
   for (int k = 0; k < g.k; ++k) {
      VecF bk[kPanelVecs];
      J2S_UNROLL
      for (int v = 0; v < kPanelVecs; ++v)
         bk[v] = vec_load(b + k * g.ldb + v * kLanes);
      J2S_UNROLL
      for (int r = 0; r < R; ++r) {
         const VecF ar = vec_splat(a[r * g.k + k]);
         J2S_UNROLL
         for (int v = 0; v < kPanelVecs; ++v)
            acc[r][v] += ar * bk[v];
      }
   }
   store_tile<R>(acc, g, row, panel, f);
}

// One row against one panel (batch-1 inference): K is split over kRowSplit partial sums, so that
// kRowSplit x kPanelVecs FMA chains run at once.
template <class F>
inline void panel_row(const PanelGemm& g, long row, int panel, const F& f) {
   const float* a = g.a + row * g.k;
   const float* b = g.b + panel * g.panel_stride;
   VecF acc[kRowSplit][kPanelVecs] = {};
   int k = 0;
   for (; k + kRowSplit <= g.k; k += kRowSplit) {
      J2S_UNROLL
      for (int s = 0; s < kRowSplit; ++s) {
         const VecF as = vec_splat(a[k + s]);
         J2S_UNROLL
         for (int v = 0; v < kPanelVecs; ++v)
            acc[s][v] += as * vec_load(b + (k + s) * g.ldb + v * kLanes);
      }
   }
   for (; k < g.k; ++k) {
      const VecF ak = vec_splat(a[k]);
      J2S_UNROLL
      for (int v = 0; v < kPanelVecs; ++v)
         acc[0][v] += ak * vec_load(b + k * g.ldb + v * kLanes);
   }
   VecF sum[1][kPanelVecs];
   J2S_UNROLL
   for (int v = 0; v < kPanelVecs; ++v) {
      sum[0][v] = acc[0][v];
      J2S_UNROLL
      for (int s = 1; s < kRowSplit; ++s)
         sum[0][v] += acc[s][v];
   }
   store_tile<1>(sum, g, row, panel, f);
}

// The `rows` (< kTileRows) rows left after the whole tiles, against one panel: one tile of them
// all, so that each panel is read once and as many FMA chains as rows run at once (the 3x3 pixels
// of a network's last stage are 9 rows; as 6 + 3 they ran half as fast).
template <class F>
inline void panel_rest(const PanelGemm& g, long row, long rows, int panel, const F& f) {
   if constexpr (kTileRows > 6) {
      switch (rows) {
      case 11: panel_tile<11>(g, row, panel, f); return;
      case 10: panel_tile<10>(g, row, panel, f); return;
      case 9: panel_tile<9>(g, row, panel, f); return;
      case 8: panel_tile<8>(g, row, panel, f); return;
      case 7: panel_tile<7>(g, row, panel, f); return;
      case 6: panel_tile<6>(g, row, panel, f); return;
      default: break;
      }
   }
   switch (rows) {
   case 5: panel_tile<5>(g, row, panel, f); break;
   case 4: panel_tile<4>(g, row, panel, f); break;
   case 3: panel_tile<3>(g, row, panel, f); break;
   case 2: panel_tile<2>(g, row, panel, f); break;
   case 1: panel_row(g, row, panel, f); break;
   default: break;
   }
}

// Every panel of g. Rows go in blocks whose share of A stays in the L2 cache (about 128 KB);
// within a block each panel is read once, by all the block's tiles in turn, so a weight matrix
// larger than the cache is streamed once per block, not once per tile.
template <class F>
inline void panel_gemm(const PanelGemm& g, const F& stage) {
   const F f = stage;   // a local copy, kept in registers: the stores to C cannot change it
   const long block = std::max<long>(kTileRows, 32768L / std::max(g.k, 1) / kTileRows * kTileRows);
   for (long first = 0; first < g.m; first += block) {
      const long rows = std::min(block, g.m - first);
      const long tiled = rows / kTileRows * kTileRows;
      for (int p = 0; p < g.panels; ++p) {
         for (long r = first; r < first + tiled; r += kTileRows)
            panel_tile<kTileRows>(g, r, p, f);
         panel_rest(g, first + tiled, rows - tiled, p, f);
      }
   }
}

// The entries dispatch_call reaches in each tier: the finishing stage built here, in its vectors.
template <int ACT>
inline void panel_gemm_act(const PanelGemm& g) { panel_gemm(g, Activation<ACT>{}); }
inline void panel_gemm_clamp(const PanelGemm& g, const BiasClamp& e) { panel_gemm(g, BiasClampLanes{e}); }

"""

_PANEL_ENTRIES = """\
// Every panel of g, in the widest vector tier this CPU has (simd.py: run-time dispatch).
template <int ACT>
inline void run_panels(const PanelGemm& g) {
""" + dispatch_call("panel_gemm_act<ACT>(g)") + """}

// B packed as panels ([ceil(N/16)][K][16], zero-padded): a constant weight.
template <int ACT>
inline void gemm_packed(long M, int N, int K, const float* A, const float* P, const float* bias, float* C) {
   const PanelGemm g{M, N, K, (N + kPanel - 1) / kPanel, A, P, static_cast<long>(kPanel) * K, kPanel, bias, C};
   run_panels<ACT>(g);
}

// C = A * B (packed) through the finishing stage: a BiasClamp applied in registers, or any other
// epilogue (conv_kernels.py) applied to each tile right after it is stored, in L1. C's first
// element is element `at` of the output tensor. Compiled once, not per layer or stage chain, so that
// MobileNetV2's build stays short.
J2S_KERNEL inline void gemm_packed_with(long M, int N, int K, const float* A, const float* P, float* C, long at,
                                        const BiasClamp& e) {
   const PanelGemm g{M, N, K, (N + kPanel - 1) / kPanel, A, P, static_cast<long>(kPanel) * K, kPanel, nullptr, C, at};
""" + dispatch_call("panel_gemm_clamp(g, e)") + """}
J2S_KERNEL inline void gemm_packed_with(long M, int N, int K, const float* A, const float* P, float* C, long at,
                                        const Epilogue& e) {
   const PanelGemm g{M, N, K, (N + kPanel - 1) / kPanel, A, P, static_cast<long>(kPanel) * K, kPanel, nullptr, C, at, e};
   run_panels<0>(g);
}

// B row-major [K,N] as it is (an activation: packing it would cost a copy): each whole panel is
// read in place, rows N apart; the last N % 16 columns as plain loops.
inline void gemm_rows(long M, int N, int K, const float* A, const float* B, float* C) {
   const PanelGemm g{M, N, K, N / kPanel, A, B, kPanel, N, nullptr, C};
   run_panels<0>(g);
   for (int j = N / kPanel * kPanel; j < N; ++j)
      for (long i = 0; i < M; ++i) {
         float acc = 0.f;
         for (int k = 0; k < K; ++k)
            acc += A[i * K + k] * B[static_cast<long>(k) * N + j];
         C[i * N + j] = acc;
      }
}
"""

# each copy of the kernels in a namespace of its own: PanelGemm's namespace holds none of them, so an
# argument-dependent lookup finds no second candidate
_GEMM_PACKED = (_PANEL_TYPES + "namespace base {\n" + _PANEL_KERNELS + "}  // namespace base\n"
                + dispatched(_PANEL_KERNELS) + _PANEL_ENTRIES)

# in the order a header writes them: later ones use earlier ones
HELPERS = {"simd": SIMD, "gemm_loops": _GEMM_LOOPS, "gemm_blas": _GEMM_BLAS, "epilogue": EPILOGUE,
           "gemm_packed": _GEMM_PACKED, "vmath": VMATH}
# helpers written with the portability layer's vectors: a header that carries one carries "simd"
SIMD_HELPERS = {"epilogue", "gemm_packed", "vmath", "conv", "conv_implicit", "winograd"}
# helpers that need the BLAS declaration (and a BLAS library at link time)
BLAS_HELPERS = {"gemm_blas"}


def pack_panels(b: np.ndarray) -> np.ndarray:
    """A [K, N] matrix as panels of PANEL columns, [ceil(N/PANEL), K, PANEL], zero-padded."""
    k, n = b.shape
    panels = -(-n // PANEL)
    out = np.zeros((k, panels * PANEL), b.dtype)
    out[:, :n] = b
    return np.ascontiguousarray(out.reshape(k, panels, PANEL).transpose(1, 0, 2))


def unpack_panels(p: np.ndarray, n: int) -> np.ndarray:
    """The inverse of `pack_panels`: [K, N]."""
    panels, k, _ = p.shape
    return np.ascontiguousarray(p.transpose(1, 0, 2).reshape(k, panels * PANEL)[:, :n])


def packed_size(k: int, n: int) -> int:
    return -(-n // PANEL) * k * PANEL
