"""The one portability layer of the generated kernels: explicit float vectors.

Left to the optimiser, the hot loops were fast only at -O3: g++ 12 unrolls the loops over a
register tile (and so keeps its accumulators in registers) or vectorises a plain loop only there,
and at -O2 (CMake's RelWithDebInfo, most experiment builds, ROOT's interpreter at -O1) the same
header ran 3-4x slower. The kernels therefore state their vectors and their unrolling: GCC/Clang
vector extensions of one width per target, chosen at compile time by the compiler's own macros,
and `J2S_UNROLL` (`#pragma GCC unroll`, which both compilers honour at any optimisation level) on
the loops whose indices name registers. `-march=native` is never required.

| target (compiler macro)                 | VecF lanes | product tile (kTileRows x 16 columns) |
|-----------------------------------------|-----------:|---------------------------------------|
| AVX-512 (`__AVX512F__`, e.g. -march=native on a recent EPYC) | 16 | 12 rows: 12 accumulators of 32 registers |
| x86-64-v3, the documented baseline (`__AVX__`) | 8   | 6 rows: 12 accumulators of 16 registers |
| plain x86-64 (SSE2)                     | 4          | 3 rows: 12 accumulators of 16 registers |
| AArch64 NEON (`__aarch64__`)            | 4          | 6 rows: 24 accumulators of 32 registers |
| other GCC/Clang targets                 | 4          | 3 rows (the compiler lowers the vectors) |
| other compilers                         | 1 (float)  | 4 rows of plain loops, same arithmetic  |

The weight layout (panels of 16 floats) is the same for all. On the reference AMD EPYC, whose
FMA units are 512 bits wide, the AVX-512 path runs the batch-64 MLPs 1.6x faster than the AVX
one. So the hot kernels are also compiled for the wider x86-64 tiers above the build's baseline
(AVX-512; AVX2 + FMA under a plain x86-64 build) and the widest one the CPU has is picked at run
time (`dispatched`, `dispatch_call`), as OpenBLAS does: the packed products, vmath's array
functions and each fused elementwise chain (a function of the header's own, Writer.define_dispatched;
an elementwise loop of fewer than 64 elements stays at the baseline, inlined). On that EPYC at -O2
-march=x86-64-v3, shared machine: Higgs MLP D at batch 64 227 -> 140 us (135 at -O3 -march=native),
the LSTM F at batch 64 47 -> 35 us (31). The rest of the header (data movement, reductions,
pooling, convolutions' own loops) runs at the baseline, and -DJ2S_DISPATCH=0 keeps everything there.
"""
from __future__ import annotations

_SELECT = """\
// The portability layer of the kernels (jaxpr2sofie's simd.py): VecF is a float vector as wide as
// the registers of the ISA this header is compiled for, chosen by the compiler's own macros, so
// -O2 gives the code -O3 gives. AVX-512: 16 lanes; AVX (x86-64-v3): 8; SSE2, NEON and other
// GCC/Clang targets: 4; other compilers: plain floats (1 lane) with the same arithmetic.
#if defined(__GNUC__) && defined(__AVX512F__)
typedef float VecF __attribute__((vector_size(64)));
typedef std::int32_t VecI __attribute__((vector_size(64)));
inline VecF vec_splat(float a) { return VecF{a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }
constexpr int kTileRows = 12;   // 12 x 1 accumulators of AVX-512's 32 registers
#elif defined(__GNUC__) && defined(__AVX__)
typedef float VecF __attribute__((vector_size(32)));
typedef std::int32_t VecI __attribute__((vector_size(32)));
inline VecF vec_splat(float a) { return VecF{a, a, a, a, a, a, a, a}; }
constexpr int kTileRows = 6;   // rows of a product's register tile: 6 x 2 accumulators of 16 registers
#elif defined(__GNUC__)
typedef float VecF __attribute__((vector_size(16)));
typedef std::int32_t VecI __attribute__((vector_size(16)));
inline VecF vec_splat(float a) { return VecF{a, a, a, a}; }
#if defined(__aarch64__)
constexpr int kTileRows = 6;   // 6 x 4 accumulators of NEON's 32 registers
#else
constexpr int kTileRows = 3;   // 3 x 4 accumulators of SSE2's 16 registers
#endif
#else
typedef float VecF;
typedef std::int32_t VecI;
inline VecF vec_splat(float a) { return a; }
constexpr int kTileRows = 4;
#endif
constexpr int kLanes = sizeof(VecF) / sizeof(float);
"""

_MACROS = """\
// Unrolls the loop it precedes whatever the optimisation level: its index then names registers.
#ifndef J2S_UNROLL
#if defined(__GNUC__)
#define J2S_UNROLL _Pragma("GCC unroll 16")
#else
#define J2S_UNROLL
#endif
#endif
// Before a loop whose iterations write their own elements and read none another one writes (an
// elementwise operator, a copy): g++ vectorises it at -O2 without run-time alias checks, which its
// -O2 cost model refuses. Clang vectorises such loops at -O2 anyway (and warns on the pragma).
#ifndef J2S_IVDEP
#if defined(__GNUC__) && !defined(__clang__)
#define J2S_IVDEP _Pragma("GCC ivdep")
#else
#define J2S_IVDEP
#endif
#endif
// The run-time-sized kernels (convolutions, epilogues) are compiled once, as they are: without this,
// g++ inlines each call, whose shape is a constant, and optimises a specialised copy per layer
// again (minutes of build for MobileNetV2).
#ifndef J2S_KERNEL
#if defined(__GNUC__) && !defined(__clang__)
#define J2S_KERNEL __attribute__((noipa))
#elif defined(__clang__)
#define J2S_KERNEL __attribute__((noinline))
#else
#define J2S_KERNEL
#endif
#endif
"""

# A convolution's usual epilogue as data, the same for every tier (its arithmetic, BiasClampLanes,
# is in each tier's vectors).
_STAGES = """\
// A convolution's usual epilogue (+ bias per channel, + residual, relu, min with a literal; each
// optional, in this order) with run-time operands: one compiled product or depthwise kernel serves
// every such layer and applies it in registers as it stores its output. relu is a lower bound of 0
// (else -inf), the min an upper bound (else +inf): both always applied, without a branch, as XLA's
// max and min (a NaN stays).
struct BiasClamp {
   const float* bias;       // [n], or nullptr
   const float* residual;   // the output tensor's shape, or nullptr
   float lo, hi;
};
"""

# The vector functions, written for whatever VecF and kLanes are: the baseline's, and each wider
# tier's of a dispatched kernel (see dispatched()).
_VECTORS = """\
// Unaligned loads and stores: a memcpy of one vector is one instruction, and breaks no aliasing rule.
inline VecF vec_load(const float* p) {
   VecF v;
   std::memcpy(&v, p, sizeof v);
   return v;
}
inline void vec_store(float* p, VecF v) { std::memcpy(p, &v, sizeof v); }
// The first n lanes (all when n >= kLanes, none when n <= 0; the others read as 0): the edge of a
// row. Lane by lane, unrolled, so that the compiler does not turn them into a memcpy call.
inline VecF vec_load_part(const float* p, int n) {
   if (n >= kLanes)
      return vec_load(p);
   float lanes[kLanes] = {};
   J2S_UNROLL
   for (int i = 0; i < kLanes; ++i)
      if (i < n)
         lanes[i] = p[i];
   return vec_load(lanes);
}
inline void vec_store_part(float* p, VecF v, int n) {
   if (n >= kLanes) {
      vec_store(p, v);
      return;
   }
   float lanes[kLanes];
   vec_store(lanes, v);
   J2S_UNROLL
   for (int i = 0; i < kLanes; ++i)
      if (i < n)
         p[i] = lanes[i];
}
template <typename To, typename From>
inline To vec_bits(const From& v) {
   To out;
   std::memcpy(&out, &v, sizeof out);
   return out;
}
// m ? a : b lane by lane (m is what a comparison gave: 0 or -1 per lane, or a bool on one lane),
// as bit operations: a select the compiler cannot turn into a branch.
#if defined(__GNUC__)
inline VecF vec_pick(VecI m, VecF a, VecF b) { return vec_bits<VecF>((m & vec_bits<VecI>(a)) | (~m & vec_bits<VecI>(b))); }
#else
inline VecF vec_pick(VecI m, VecF a, VecF b) { return m ? a : b; }
#endif
// max and min as XLA's: a NaN in either operand gives NaN
inline VecF vec_max(VecF acc, VecF x) { return vec_pick((x > acc) | (x != x), x, acc); }
inline VecF vec_min(VecF acc, VecF x) { return vec_pick((x < acc) | (x != x), x, acc); }
// relu as XLA's max(x, 0): NaN propagates, -0 becomes +0
inline VecF vec_relu(VecF y) { return vec_pick((y > 0.f) | (y != y), y, VecF{}); }

// A finishing stage applied to a kernel's output while it is in registers: nothing or relu here
// (gemm_packed<ACT>), a convolution's epilogue functor otherwise (epilogue.py), which has the same
// members: a whole-vector form where kVectors, else one value at a time.
template <int ACT>
struct Activation {
   static constexpr bool kVectors = true;
   VecF lanes(VecF y, long, long, int) const { return ACT == 1 ? vec_relu(y) : y; }
   float operator()(float y, long, long) const { return ACT == 1 && y <= 0.f ? 0.f : y; }
};

// Stores the first n lanes of v (all when n >= kLanes) at y through the finishing stage f: channel
// c onward of element `at` onward of the output tensor.
template <class F>
inline void store_through(const F& f, float* y, VecF v, long c, long at, int n) {
   if constexpr (F::kVectors) {
      vec_store_part(y, f.lanes(v, c, at, n), n);
   } else {
      vec_store_part(y, v, n);
      for (int j = 0; j < std::min(n, kLanes); ++j)
         y[j] = f(y[j], c + j, at + j);
   }
}
// A BiasClamp (a convolution's usual epilogue, conv_kernels.py) in these vectors: a finishing stage.
struct BiasClampLanes {
   static constexpr bool kVectors = true;
   BiasClamp e;
   VecF lanes(VecF y, long c, long i, int n) const {
      if (e.bias)
         y += vec_load_part(e.bias + c, n);
      if (e.residual)
         y += vec_load_part(e.residual + i, n);
      y = vec_pick(y <= e.lo, vec_splat(e.lo), y);   // -0 becomes +0 where lo is 0, as relu does
      return vec_pick(y > e.hi, vec_splat(e.hi), y);
   }
   float operator()(float y, long, long) const { return y; }   // unused: kVectors
};
"""

_F8 = """\
// A block of 8 floats whatever the target (one AVX register, two SSE2 or NEON ones): the
// convolutions' channel blocks, whose weights are laid out for it. Left to itself, g++ 12
// vectorises the convolution loops across taps or pixels instead of channels and keeps the
// accumulators in scalar registers (4x slower). No function takes or returns an f8 by value, so no
// ABI note fires where AVX is not enabled.
#if defined(__GNUC__) || defined(__clang__)
typedef float f8 __attribute__((vector_size(32)));
#else
struct f8 {
   float v[8];
   f8& operator+=(const f8& o) { for (int i = 0; i < 8; ++i) v[i] += o.v[i]; return *this; }
   friend f8 operator*(const f8& a, const f8& b) { f8 r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] * b.v[i]; return r; }
};
#endif
inline void f8_load(f8& v, const float* p) { std::memcpy(&v, p, sizeof v); }
inline void f8_store(float* p, const f8& v) { std::memcpy(p, &v, sizeof v); }
#if defined(__GNUC__) || defined(__clang__)
inline void f8_splat(f8& v, float a) { v = f8{a, a, a, a, a, a, a, a}; }
#else
inline void f8_splat(f8& v, float a) { for (int i = 0; i < 8; ++i) v.v[i] = a; }
#endif
"""

# Run-time dispatch of the hottest kernels (products, vector math, fused chains) to vectors wider than the baseline's,
# on x86-64 with GCC or Clang: a header built for the documented baseline (x86-64-v3, or plain
# x86-64) then multiplies with AVX-512 on a CPU that has it, as OpenBLAS does, and one built for
# plain x86-64 with AVX2 + FMA. The tier is chosen once per process from the CPU's own report
# (__builtin_cpu_supports, which also checks that the OS saves the wider registers). The baseline
# code is still compiled and runs everywhere else; -DJ2S_DISPATCH=0 turns dispatch off,
# -DJ2S_DISPATCH_AVX512=0 the AVX-512 tier alone. Not under ROOT's interpreter (cling), which
# resolves no libgcc CPU model: there the baseline runs.
_DISPATCH = """\
// Run-time dispatch of the products to a wider vector tier than this build's ISA (simd.py): the
// tiers compiled in are those above the baseline. -DJ2S_DISPATCH=0: the baseline only.
#ifndef J2S_DISPATCH
#define J2S_DISPATCH 1
#endif
#ifndef J2S_DISPATCH_AVX512
#define J2S_DISPATCH_AVX512 1
#endif
#if J2S_DISPATCH && defined(__GNUC__) && defined(__x86_64__) && !defined(__CLING__)
#if J2S_DISPATCH_AVX512 && !defined(__AVX512F__) && !defined(J2S_TIER_AVX512)
#define J2S_TIER_AVX512 1
#endif
#if !(defined(__AVX2__) && defined(__FMA__)) && !defined(J2S_TIER_AVX2)
#define J2S_TIER_AVX2 1
#endif
#endif
#ifdef J2S_TIER_AVX512
inline bool cpu_avx512() {
   static const bool yes = (__builtin_cpu_init(), __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"));
   return yes;
}
#endif
#ifdef J2S_TIER_AVX2
inline bool cpu_avx2() {
   static const bool yes = (__builtin_cpu_init(), __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
   return yes;
}
#endif
"""

# tier: (macro, target features, vector bytes, product tile rows, CPU check)
TIERS = {
    "avx512": ("J2S_TIER_AVX512", "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma", 64, 12, "cpu_avx512()"),
    "avx2": ("J2S_TIER_AVX2", "avx2,fma", 32, 6, "cpu_avx2()"),
}


def _in_tier(name: str, code: str) -> str:
    """`code` in the namespace of tier `name`, its functions compiled for the tier's ISA."""
    macro, features = TIERS[name][:2]
    return (f"#ifdef {macro}\n"
            f"namespace {name} {{\n"
            "#if defined(__clang__)\n"
            f'#pragma clang attribute push(__attribute__((target("{features}"))), apply_to = function)\n'
            "#else\n"
            "#pragma GCC push_options\n"
            f'#pragma GCC target("{features}")\n'
            "#endif\n"
            + code +
            "#if defined(__clang__)\n"
            "#pragma clang attribute pop\n"
            "#else\n"
            "#pragma GCC pop_options\n"
            "#endif\n"
            f"}}  // namespace {name}\n"
            "#endif\n")


def _tier_vectors(name: str) -> str:
    """The tier's VecF, kLanes, kTileRows and vector functions (carried by every header with "simd")."""
    _, _, width, rows, _ = TIERS[name]
    splat = ", ".join(["a"] * (width // 4))
    return _in_tier(name, f"typedef float VecF __attribute__((vector_size({width})));\n"
                          f"typedef std::int32_t VecI __attribute__((vector_size({width})));\n"
                          f"inline VecF vec_splat(float a) {{ return VecF{{{splat}}}; }}\n"
                          f"constexpr int kTileRows = {rows};\n"
                          "constexpr int kLanes = sizeof(VecF) / sizeof(float);\n" + _VECTORS)


def dispatched(code: str) -> str:
    """`code` (written with VecF, kLanes, kTileRows and the vector functions) once more per wider
    tier, each in a namespace of the tier's name whose functions are compiled for its ISA."""
    return "".join(_in_tier(name, code) for name in TIERS)


def _tier_branches(returned) -> str:
    """C++ that returns `returned(tier)` from the widest tier compiled in whose CPU check passes."""
    return "".join(f"#ifdef {macro}\n   if ({check})\n      return {returned(name)};\n#endif\n"
                   for name, (macro, _, _, _, check) in TIERS.items())


def dispatch_call(call: str, base: str = "base::", when: str = "") -> str:
    """C++ statements that run `call` (e.g. "panel_gemm<ACT>(g)") in the widest tier the CPU has, else
    the baseline ISA's copy (in namespace `base`, or where `base` says). With `when` (a C++
    condition), the tiers only where it holds: an elementwise loop of a few vectors is faster inlined
    at the baseline's width than called in a wider tier, most of whose last vector is padding."""
    branches = _tier_branches(lambda tier: f"{tier}::{call}")
    if when and branches:
        branches = f"   if ({when}) {{\n" + "".join(f"   {line}\n" if not line.startswith("#") else f"{line}\n"
                                                    for line in branches.splitlines()) + "   }\n"
    return branches + f"   {base}{call};\n"


# Elements below which an elementwise loop stays at the baseline's width (dispatch_call's `when`).
ELEMENTWISE_DISPATCH_MIN = 64


# The tier the dispatched kernels run in on this CPU ("base": this build's own ISA), for tests and
# for a user's own check.
_TIER_NAME = ("// The vector tier the dispatched kernels (products, vector math, fused elementwise chains) run in\n"
              "// on this CPU: \"base\" is this build's own ISA.\n"
              "inline const char* dispatch_tier() {\n"
              + _tier_branches(lambda tier: f'"{tier}"') + '   return "base";\n}\n')

SIMD = _SELECT + _MACROS + _DISPATCH + _TIER_NAME + _STAGES + _VECTORS + _F8 + "".join(_tier_vectors(t) for t in TIERS)
