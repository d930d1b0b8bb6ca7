"""A 1x1 convolution's GEMM on a kernel packed at conversion time.

Late layers of a mobile network multiply a few pixels by a large weight matrix (9 x 320 times
320 x 1280 in MobileNetV2 at 96x96): the time goes into reading the weights. A BLAS call packs
them again on every call, reading them twice, and walks each 16-column strip with a stride of a
whole row. Packed once into strips of 16 columns ([strips, K, 16], the last strip zero-padded),
the weights are read once, front to back, by a 6 x 16 register tile.
"""
from __future__ import annotations

import numpy as np

STRIP = 16   # output channels per packed strip: two f8 vectors

PACKED_HELPER = """\\
// C[R x cols] = A[R x K] (rows lda apart) times one packed 16-column strip B[K x 16]; C rows ldc apart.
template <int R>
inline void packed_tile(int K, const float* A, long lda, const float* B, float* C, long ldc, int cols) {
   f8 acc[R][2];
   for (int r = 0; r < R; ++r) {
      acc[r][0] = f8{};
      acc[r][1] = f8{};
   }
   for (int k = 0; k < K; ++k) {
      f8 b0, b1, a;
      f8_load(b0, B + 16 * static_cast<long>(k));
      f8_load(b1, B + 16 * static_cast<long>(k) + 8);
      for (int r = 0; r < R; ++r) {
         f8_splat(a, A[r * lda + k]);
         acc[r][0] += a * b0;
         acc[r][1] += a * b1;
      }
   }
   float t[16];
   for (int r = 0; r < R; ++r) {
      if (cols == 16) {
         f8_store(C + r * ldc, acc[r][0]);
         f8_store(C + r * ldc + 8, acc[r][1]);
      } else {
         f8_store(t, acc[r][0]);
         f8_store(t + 8, acc[r][1]);
         std::copy_n(t, cols, C + r * ldc);
      }
   }
}

// Row-major C[M x N] = A[M x K] times B, packed as strips of 16 columns ([ceil(N/16), K, 16]).
inline void gemm_packed(int M, int N, int K, const float* A, const float* Bp, float* C) {
   for (int n0 = 0; n0 < N; n0 += 16) {
      const float* B = Bp + static_cast<long>(n0) * K;
      const int cols = std::min(16, N - n0);
      int m = 0;
      for (; m + 6 <= M; m += 6)
         packed_tile<6>(K, A + static_cast<long>(m) * K, K, B, C + static_cast<long>(m) * N + n0, N, cols);
      const float* a = A + static_cast<long>(m) * K;
      float* c = C + static_cast<long>(m) * N + n0;
      switch (M - m) {
         case 5: packed_tile<5>(K, a, K, B, c, N, cols); break;
         case 4: packed_tile<4>(K, a, K, B, c, N, cols); break;
         case 3: packed_tile<3>(K, a, K, B, c, N, cols); break;
         case 2: packed_tile<2>(K, a, K, B, c, N, cols); break;
         case 1: packed_tile<1>(K, a, K, B, c, N, cols); break;
         default: break;
      }
   }
}
"""
HELPERS = {"gemm_packed": PACKED_HELPER}


def pack(kernel: np.ndarray) -> np.ndarray:
    """[K, N] -> [ceil(N / 16), K, 16], zero-padded."""
    k, n = kernel.shape
    strips = -(-n // STRIP)
    padded = np.zeros((k, strips * STRIP), np.float32)
    padded[:, :n] = kernel
    return np.ascontiguousarray(padded.reshape(k, strips, STRIP).transpose(1, 0, 2))


def unpack(packed: np.ndarray, n: int) -> np.ndarray:
    """The inverse of `pack`: [K, N]."""
    strips, k, _ = packed.shape
    return np.ascontiguousarray(packed.transpose(1, 0, 2).reshape(k, strips * STRIP)[:, :n])
