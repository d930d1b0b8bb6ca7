"""Vectorised exp, tanh and logistic for the generated code.

glibc's scalar expf/tanhf calls cost 5-20 ns each and no compiler vectorises a loop around them
without -ffast-math (which the generated code never uses: it breaks NaN semantics). The LSTM and
GRU gates, softmax and GELU spend most of their time there. These versions work on whole vectors
(the portability layer's vectors, simd.py: 8 lanes with AVX, else 4), with no branch and no library call:

- exp(x) = 2^n * e^r, n = round(x / ln 2), |r| <= ln2 / 2, e^r by its Taylor polynomial to r^7
  (truncation < 6e-9); 2^n applied as two factors 2^(n/2) so both stay normal numbers and an
  overflow gives inf and an underflow 0 (XLA flushes denormals too). Measured max relative error
  7.5e-8 over [-87, 88].
- tanh(|x|) = (1 - e^(-2|x|)) / (1 + e^(-2|x|)) above 0.625, and its odd Taylor series to x^17
  below, where the quotient would cancel; the sign is copied back bit for bit (tanh(-0) = -0).
  Max relative error 3.5e-7; exactly +-1 from |x| = 7.99881172 on, where XLA's tanh is.
- logistic(x) = 1 / (1 + e^(-x)).
NaN in gives NaN out; +-inf give the limits. Other compilers get the std:: functions.
"""
from __future__ import annotations

from .simd import ELEMENTWISE_DISPATCH_MIN, dispatch_call, dispatched

KINDS = {"exp": "vm_exp_n", "tanh": "vm_tanh_n", "logistic": "vm_sigmoid_n"}

# The vector functions (GCC/Clang vector extensions), compiled for the baseline and for each wider tier
# (simd.dispatched): the array forms vm_*_v are reached through vm_*_n, which picks the tier.
_VECTOR_MATH = """\
inline VecF vm_exp(VecF x) {
   const VecI nan = x != x;
   VecF xc = vec_pick(x < -104.f, VecF{} - 104.f, x);
   xc = vec_pick(xc > 89.f, VecF{} + 89.f, xc);
   xc = vec_pick(nan, VecF{}, xc);
   const VecF n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;   // round to nearest
   const VecF r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;             // ln 2 in two parts
   VecF p = VecF{} + 1.f / 5040.f;
   p = p * r + 1.f / 720.f;
   p = p * r + 1.f / 120.f;
   p = p * r + 1.f / 24.f;
   p = p * r + 1.f / 6.f;
   p = p * r + 0.5f;
   p = p * r + 1.f;
   p = p * r + 1.f;
   const VecI ni = __builtin_convertvector(n, VecI), n1 = ni >> 1, n2 = ni - n1;
   return vec_pick(nan, x, p * vec_bits<VecF>((n1 + 127) << 23) * vec_bits<VecF>((n2 + 127) << 23));
}
inline VecF vm_tanh(VecF x) {
   const VecI bits = vec_bits<VecI>(x);
   const VecF a = vec_bits<VecF>(bits & 0x7fffffff);
   const VecF t = vm_exp(a * -2.f);
   const VecF s = a * a;
   VecF p = VecF{} + -929569.f / 638512875.f;
   p = p * s + 21844.f / 6081075.f;
   p = p * s + -1382.f / 155925.f;
   p = p * s + 62.f / 2835.f;
   p = p * s + -17.f / 315.f;
   p = p * s + 2.f / 15.f;
   p = p * s + -1.f / 3.f;
   VecF r = vec_pick(a < 0.625f, a + a * s * p, (1.f - t) / (1.f + t));
   r = vec_pick(a >= 7.99881172f, VecF{} + 1.f, r);   // exactly 1 where XLA's tanh is (ops/elementwise.py)
   r = vec_pick(a == 0.f, a, r);   // +-0, and a denormal (== 0 as the CPU reads it) as it came, as XLA's
   return vec_bits<VecF>(vec_bits<VecI>(r) | (bits & (-2147483647 - 1)));
}
inline VecF vm_sigmoid(VecF x) { return 1.f / (1.f + vm_exp(-x)); }
template <VecF (*F)(VecF)>
inline void vm_apply(const float* x, float* y, long n) {
   long i = 0;
   for (; i + kLanes <= n; i += kLanes) {
      VecF v;
      std::memcpy(&v, x + i, sizeof v);
      v = F(v);
      std::memcpy(y + i, &v, sizeof v);
   }
   if (i < n) {   // the tail, through a zero-padded vector
      float buf[kLanes] = {};
      std::memcpy(buf, x + i, (n - i) * sizeof(float));
      const VecF v = F(vec_bits<VecF>(buf));
      std::memcpy(buf, &v, sizeof v);
      std::memcpy(y + i, buf, (n - i) * sizeof(float));
   }
}
inline void vm_exp_v(const float* x, float* y, long n) { vm_apply<vm_exp>(x, y, n); }
inline void vm_tanh_v(const float* x, float* y, long n) { vm_apply<vm_tanh>(x, y, n); }
inline void vm_sigmoid_v(const float* x, float* y, long n) { vm_apply<vm_sigmoid>(x, y, n); }
"""

_SCALAR_MATH = """\
inline void vm_exp_n(const float* x, float* y, long n) { for (long i = 0; i < n; ++i) y[i] = std::exp(x[i]); }
inline void vm_tanh_n(const float* x, float* y, long n) { for (long i = 0; i < n; ++i) y[i] = std::tanh(x[i]); }
inline void vm_sigmoid_n(const float* x, float* y, long n) {
   for (long i = 0; i < n; ++i) y[i] = 1.f / (1.f + std::exp(-x[i]));
}
"""

VMATH = ("#if defined(__GNUC__)\n" + _VECTOR_MATH + dispatched(_VECTOR_MATH)
         + "".join(f"inline void vm_{f}_n(const float* x, float* y, long n) {{\n"
                   + dispatch_call(f"vm_{f}_v(x, y, n)", base="", when=f"n >= {ELEMENTWISE_DISPATCH_MIN}") + "}\n" for f in ("exp", "tanh", "sigmoid"))
         + "#else\n" + _SCALAR_MATH + "#endif\n")
