"""C++ kernels of the matrix products, carried by a header only when its code calls them
(`Writer.need`), inside the model's own namespace so several headers can share a translation unit.

A product by a weight matrix (a dense layer) reads that matrix *packed*: stored in the weight file
as panels of PANEL columns, [ceil(N/PANEL)][K][PANEL] with the last panel zero-padded. Each step
of the inner loop then reads PANEL contiguous weights into vector registers and multiplies them by
one broadcast input value, accumulating a tile of rows x PANEL outputs in registers; the bias and
activation are applied to the tile before it is stored (the product's epilogue). On this project's
reference machine (2-core AMD EPYC, AVX2) this beats both plain loops and OpenBLAS from batch 1 to
batch 256 for the layer sizes of HEP models; products of two activations still go to loops or BLAS.
"""
from __future__ import annotations

import numpy as np

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

_GEMM_PACKED = """\
// C[M,N] = act(A[M,K] * B + bias) with B packed as panels of 16 columns ([ceil(N/16)][K][16]).
// GCC and Clang keep the accumulators in vector registers (vector extensions); other compilers
// get the same arithmetic as plain loops.
template <int R>
struct PanelTile {   // R rows x 16 columns of accumulators
#if defined(__GNUC__)
   typedef float V __attribute__((vector_size(32)));
   typedef float VLoad __attribute__((vector_size(32), aligned(4), __may_alias__));
   V v[R][2] = {};
   void fma(int i, float a, const float* p) {
      v[i][0] += a * *reinterpret_cast<const VLoad*>(p);
      v[i][1] += a * *reinterpret_cast<const VLoad*>(p + 8);
   }
   void add(int i, const PanelTile& o, int k) { v[i][0] += o.v[k][0]; v[i][1] += o.v[k][1]; }
#else
   float v[R][16] = {};
   void fma(int i, float a, const float* p) {
      for (int j = 0; j < 16; ++j) v[i][j] += a * p[j];
   }
   void add(int i, const PanelTile& o, int k) {
      for (int j = 0; j < 16; ++j) v[i][j] += o.v[k][j];
   }
#endif
   template <int ACT>
   void store(int rows, const float* bias, float* C, long ldc, int nc) const {
      float out[R][16];
      std::memcpy(out, v, sizeof out);
      for (int i = 0; i < rows; ++i)
         for (int j = 0; j < nc; ++j) {
            const float y = out[i][j] + (bias ? bias[j] : 0.f);
            // relu as XLA's max(x, 0): NaN propagates, -0 becomes +0
            C[i * ldc + j] = ACT == 1 ? ((y > 0.f || y != y) ? y : 0.f) : y;
         }
   }
};

// R rows (R >= 2) against one panel whose rows are ldp floats apart: R x 2 independent FMA chains.
template <int R, int ACT>
inline void panel_rows(int K, const float* A, long lda, const float* P, long ldp, const float* bias, float* C, long ldc,
                       int nc) {
   PanelTile<R> t;
   for (int k = 0; k < K; ++k)
      for (int i = 0; i < R; ++i)
         t.fma(i, A[i * lda + k], P + k * ldp);
   t.template store<ACT>(R, bias, C, ldc, nc);
}

// One row against one panel: K is split over four partial sums, so eight FMA chains run at once.
template <int ACT>
inline void panel_row(int K, const float* a, const float* P, long ldp, const float* bias, float* c, int nc) {
   PanelTile<4> t;
   int k = 0;
   for (; k + 4 <= K; k += 4)
      for (int u = 0; u < 4; ++u)
         t.fma(u, a[k + u], P + (k + u) * ldp);
   for (; k < K; ++k)
      t.fma(0, a[k], P + k * ldp);
   t.add(0, t, 1);
   t.add(2, t, 3);
   t.add(0, t, 2);
   t.template store<ACT>(1, bias, c, 0, nc);
}

// R rows against every panel (R < 6: the rows left after the 6-row tiles of a block).
template <int ACT>
inline void panel_tail(long R, int N, int K, int panels, const float* A, const float* B, long pstride, long ldp,
                       const float* bias, float* C) {
   for (int p = 0; p < panels; ++p) {
      const float* pp = B + p * pstride;
      const float* bp = bias ? bias + p * 16 : nullptr;
      float* cp = C + p * 16;
      const int nc = std::min(16, N - p * 16);
      switch (R) {
      case 5: panel_rows<5, ACT>(K, A, K, pp, ldp, bp, cp, N, nc); break;
      case 4: panel_rows<4, ACT>(K, A, K, pp, ldp, bp, cp, N, nc); break;
      case 3: panel_rows<3, ACT>(K, A, K, pp, ldp, bp, cp, N, nc); break;
      case 2: panel_rows<2, ACT>(K, A, K, pp, ldp, bp, cp, N, nc); break;
      case 1: panel_row<ACT>(K, A, pp, ldp, bp, cp, nc); break;
      default: break;
      }
   }
}

// C[M,N] = act(A[M,K] * B + bias) over `panels` panels of 16 columns: panel p starts at
// B + p * pstride and its rows are ldp floats apart. Rows go in blocks whose share of A stays in
// the L2 cache (about 128 KB); within a block each panel is read once, by all its 6-row tiles in
// turn, so a weight matrix larger than the cache is streamed once per block, not once per tile.
template <int ACT>
inline void panel_gemm(long M, int N, int K, int panels, const float* A, const float* B, long pstride, long ldp,
                       const float* bias, float* C) {
   const long block = std::max(6L, 32768L / std::max(K, 1) / 6 * 6);
   for (long i0 = 0; i0 < M; i0 += block) {
      const long rows = std::min(block, M - i0), full = rows / 6 * 6;
      for (int p = 0; p < panels; ++p)
         for (long i = i0; i < i0 + full; i += 6)
            panel_rows<6, ACT>(K, A + i * K, K, B + p * pstride, ldp, bias ? bias + p * 16 : nullptr,
                               C + i * N + p * 16, N, std::min(16, N - p * 16));
      panel_tail<ACT>(rows - full, N, K, panels, A + (i0 + full) * K, B, pstride, ldp, bias, C + (i0 + full) * N);
   }
}

// B packed as panels of 16 columns ([ceil(N/16)][K][16], zero-padded): a constant weight.
template <int ACT>
inline void gemm_packed(long M, int N, int K, const float* A, const float* P, const float* bias, float* C) {
   panel_gemm<ACT>(M, N, K, (N + 15) / 16, A, P, 16L * K, 16, bias, C);
}

// B row-major [K,N] as it is (an activation: packing it would cost a copy): each whole 16-column
// panel is read in place, rows N apart; the last N % 16 columns as plain loops.
inline void gemm_rows(long M, int N, int K, const float* A, const float* B, float* C) {
   panel_gemm<0>(M, N, K, N / 16, A, B, 16, N, nullptr, C);
   for (int j = N / 16 * 16; j < N; ++j)
      for (long i = 0; i < M; ++i) {
         float acc = 0.f;
         for (int k = 0; k < K; ++k)
            acc += A[i * K + k] * B[static_cast<long>(k) * N + j];
         C[i * N + j] = acc;
      }
}
"""

HELPERS = {"gemm_loops": _GEMM_LOOPS, "gemm_blas": _GEMM_BLAS, "gemm_packed": _GEMM_PACKED, "vmath": VMATH}
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
