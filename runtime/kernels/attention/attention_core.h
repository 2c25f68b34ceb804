// The one implementation of quant_attention (attention.h), compiled once per ISA: each attention_<isa>.cc defines
// BEBERT_ATTN_NS (a namespace name) and BEBERT_ATTN_TARGET (the function attribute that selects the ISA) and then
// includes this file; the AVX-512 instance also defines BEBERT_ATTN_VNNI and the AVX2 instance BEBERT_ATTN_AVX2,
// which compute the two integer products (Q.K and P.V) on packed layouts (vpdpbusd; vpmaddubsw + vpmaddwd) instead
// of the portable loops (integers: same results). The loops are written for the compiler's vectoriser (contiguous
// int8 / int32 / float rows, partial sums in 16 explicit lanes); every float operation happens in the same order
// on every ISA and nothing is contracted (-ffp-contract=off), so all paths give bit-identical results.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "../core/thread_pool.h"
#include "attention.h"
// The AVX-512 (VNNI), AVX2 and NEON instances compute the two integer products on packed layouts: vpdpbusd, AVX2's
// vpmaddubsw + vpmaddwd, or NEON's smull + sadalp (the last two exact for codes of bits <= 7, whose unsigned side
// fits a signed byte and whose pair sums fit int16; 8-bit codes take the portable loops there).
#if defined(BEBERT_ATTN_VNNI) || defined(BEBERT_ATTN_AVX2)
#define BEBERT_ATTN_PACKED 1
#include <immintrin.h>
#elif defined(BEBERT_ATTN_NEON)
#define BEBERT_ATTN_PACKED 1
#include <arm_neon.h>
#endif

namespace bebert {
namespace BEBERT_ATTN_NS {

constexpr int kLanes = 16;

// The softmax row keeps 16 running lanes (lane t sees x[j] for j = t mod 16) held in vectors of
// BEBERT_ATTN_VEC_FLOATS floats (GCC / Clang vector extensions, the instance's native width; 1 in the scalar
// reference): with plain arrays GCC 12 kept these loops scalar or folded the lanes through the stack. Every lane
// runs the same float operations on every ISA, so every instance gives the same result.
#ifndef BEBERT_ATTN_VEC_FLOATS
#define BEBERT_ATTN_VEC_FLOATS 1
#endif
constexpr int kVecFloats = BEBERT_ATTN_VEC_FLOATS, kVecs = kLanes / kVecFloats;
typedef float VecF __attribute__((vector_size(4 * BEBERT_ATTN_VEC_FLOATS)));
typedef int32_t VecI __attribute__((vector_size(4 * BEBERT_ATTN_VEC_FLOATS)));

BEBERT_ATTN_TARGET inline VecF splat(float v) {
  VecF r;
  for (int t = 0; t < kVecFloats; ++t) r[t] = v;
  return r;
}

// exp(x) on every lane, for x <= 0 (softmax after subtracting the row maximum); 0 below -87.3. Cody-Waite
// reduction by ln 2 in two parts and Cephes' degree-6 polynomial for e^r on [-ln2/2, ln2/2]: within 2 ulp of expf.
// n = round(x / ln 2) by the 1.5 * 2^23 trick (round half to even in the default rounding mode, exact for
// |n| <= 2^22). Written on vectors of the instance's width (GCC 12 would not if-convert a scalar form's selects
// into an AVX2 loop: the softmax's exp ran scalar, 70% of the AVX2 attention core); every lane runs the same float
// operations, so every instance gives the same bits. x is clamped into [-87.3, 0] first (NaN to -87.3), so the
// conversion to int is always defined; a NaN x stays NaN.
BEBERT_ATTN_TARGET inline VecF exp_vec(VecF x) {
  const VecF lo = splat(-87.3f), zero = splat(0.0f), magic = splat(12582912.0f);
  VecF xc = x > lo ? x : lo;
  xc = xc < zero ? xc : zero;
  const VecF n = (xc * splat(1.44269504088896341f) + magic) - magic;
  VecF r = xc - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  VecF p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = (p * r) * r + r + splat(1.0f);
  const VecI bits = (__builtin_convertvector(n, VecI) + 127) << 23;
  VecF scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const VecF y = x < lo ? zero : p * scale;
  return x != x ? x : y;
}

template <int W, int... I>
BEBERT_ATTN_TARGET inline VecF lanes_from(VecF v, std::integer_sequence<int, I...>) {
  return __builtin_shufflevector(v, v, ((I + W) % kVecFloats)...);  // lane i takes lane i + W (the rest: don't care)
}

// The 16 lanes folded pairwise, lane t = op(lane t, lane t + w) for w = 8, 4, 2, 1, in vector operations (vector
// halves, then shuffles within one vector): the fixed order of the row sums on every instance.
template <typename Op>
BEBERT_ATTN_TARGET inline float fold_lanes(VecF (&l)[kVecs], Op op) {
  for (int w = kVecs / 2; w >= 1; w /= 2)
    for (int u = 0; u < w; ++u) l[u] = op(l[u], l[u + w]);
  VecF v = l[0];
  constexpr auto idx = std::make_integer_sequence<int, kVecFloats>{};
  if constexpr (kVecFloats >= 16) v = op(v, lanes_from<8>(v, idx));
  if constexpr (kVecFloats >= 8) v = op(v, lanes_from<4>(v, idx));
  if constexpr (kVecFloats >= 4) v = op(v, lanes_from<2>(v, idx));
  if constexpr (kVecFloats >= 2) v = op(v, lanes_from<1>(v, idx));
  return v[0];
}

BEBERT_ATTN_TARGET inline VecF load_vec(const float* x) {
  VecF v;
  std::memcpy(&v, x, sizeof v);
  return v;
}

// Partial vectors: lanes t < n of x (n <= kVecFloats), the other lanes zero; stores write lanes t < n only. Masked
// moves on AVX-512 (a variable-length memcpy per softmax row tail cost more than the tail's arithmetic).
template <typename T, typename V>
BEBERT_ATTN_TARGET inline V load_part_as(const T* x, int n) {
  V v;
#if defined(BEBERT_ATTN_VNNI)
  const __m512i r = _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << n) - 1u), x);
  std::memcpy(&v, &r, sizeof v);
#else
  T t[kVecFloats] = {};
  std::memcpy(t, x, sizeof(T) * n);
  std::memcpy(&v, t, sizeof v);
#endif
  return v;
}

BEBERT_ATTN_TARGET inline VecF load_part(const float* x, int n) { return load_part_as<float, VecF>(x, n); }

BEBERT_ATTN_TARGET inline void store_part(float* x, VecF v, int n) {
#if defined(BEBERT_ATTN_VNNI)
  __m512 r;
  std::memcpy(&r, &v, sizeof v);
  _mm512_mask_storeu_ps(x, static_cast<__mmask16>((1u << n) - 1u), r);
#else
  float t[kVecFloats];
  std::memcpy(t, &v, sizeof v);
  std::memcpy(x, t, sizeof(float) * n);
#endif
}

// v with its lanes t >= n set to `fill` (a tail's padding lanes must not reach a max or a min).
BEBERT_ATTN_TARGET inline VecF first_lanes(VecF v, int n, float fill) {
  VecI lane;
  for (int t = 0; t < kVecFloats; ++t) lane[t] = t;
  VecI count;
  for (int t = 0; t < kVecFloats; ++t) count[t] = n;
  return lane < count ? v : splat(fill);
}

struct MaxOp {
  BEBERT_ATTN_TARGET VecF operator()(VecF a, VecF b) const { return b > a ? b : a; }
};
struct MinOp {
  BEBERT_ATTN_TARGET VecF operator()(VecF a, VecF b) const { return b < a ? b : a; }
};
struct AddOp {
  BEBERT_ATTN_TARGET VecF operator()(VecF a, VecF b) const { return a + b; }
};

// One softmax row of L >= 1 scores, in three passes over p (float [L]):
//   p[j] = float(acc[j]) * scale + mask[j], and their maximum m;
//   p[j] = exp_vec(p[j] - m), summed in 16 running lanes (lane t takes j = t mod 16 in order) and fold_lanes;
//   p[j] = p[j] * (1 / sum), and their minimum (returned).
// Maximum and minimum are exact in any order (the inputs are finite: checked by the op), so they fold the same way.
BEBERT_ATTN_TARGET inline float softmax_row(const int32_t* acc, const float* mask, float scale, int L, float* p) {
  const MaxOp vmax;
  const MinOp vmin;
  const AddOp vadd;
  VecF lane[kVecs];
  int j = 0;
  for (int u = 0; u < kVecs; ++u) lane[u] = splat(-INFINITY);
  for (; j + kVecFloats <= L; j += kVecFloats) {
    VecI a;
    std::memcpy(&a, acc + j, sizeof a);
    const VecF v = __builtin_convertvector(a, VecF) * splat(scale) + load_vec(mask + j);
    std::memcpy(p + j, &v, sizeof v);
    lane[0] = vmax(lane[0], v);
  }
  if (j < L) {  // the tail as one partial vector: the same operations per element as above
    const int n = L - j;
    const VecF v = __builtin_convertvector((load_part_as<int32_t, VecI>(acc + j, n)), VecF) * splat(scale) +
                   load_part(mask + j, n);
    store_part(p + j, v, n);
    lane[0] = vmax(lane[0], first_lanes(v, n, -INFINITY));
  }
  const float m = fold_lanes(lane, vmax);
  for (int u = 0; u < kVecs; ++u) lane[u] = splat(0.0f);
  j = 0;
  for (; j + kLanes <= L; j += kLanes)
    for (int u = 0; u < kVecs; ++u) {
      const VecF v = exp_vec(load_vec(p + j + u * kVecFloats) - splat(m));
      std::memcpy(p + j + u * kVecFloats, &v, sizeof v);
      lane[u] = lane[u] + v;
    }
  for (int u = 0; j + u * kVecFloats < L; ++u) {  // the tail: lanes 0 .. L - j - 1, +0 added to the others
    const int o = j + u * kVecFloats, n = std::min(kVecFloats, L - o);
    const VecF v = exp_vec(load_part(p + o, n) - splat(m));
    store_part(p + o, v, n);
    lane[u] = lane[u] + first_lanes(v, n, 0.0f);  // the padding lanes' exp(0 - m) must not reach the sum
  }
  const float inv_total = 1.0f / fold_lanes(lane, vadd);
  for (int u = 0; u < kVecs; ++u) lane[u] = splat(INFINITY);
  j = 0;
  for (; j + kVecFloats <= L; j += kVecFloats) {
    const VecF v = load_vec(p + j) * splat(inv_total);
    std::memcpy(p + j, &v, sizeof v);
    lane[0] = vmin(lane[0], v);
  }
  if (j < L) {
    const int n = L - j;
    const VecF v = load_part(p + j, n) * splat(inv_total);
    store_part(p + j, v, n);
    lane[0] = vmin(lane[0], first_lanes(v, n, INFINITY));
  }
  return fold_lanes(lane, vmin);
}

// clamp(nearbyint(v), lo, hi) as float (NaN gives lo, so the integer conversion after it is always defined);
// written as two selects so that loops over it vectorise.
BEBERT_ATTN_TARGET inline float round_clamp(float v, float lo, float hi) {
  float q = std::nearbyint(v);
  q = q >= lo ? q : lo;
  return q <= hi ? q : hi;
}

// The row stride of q, k and v in floats: heads * head_dim, or more when they are column ranges of one packed tensor.
inline int input_stride(const AttentionArgs& a) { return a.in_stride ? a.in_stride : a.heads * a.head_dim; }

// codes[r * cs + c * ds] = clamp(nearbyint(x[r * stride + c] / step), qn, qp) for rows r < rows, columns c < cols.
BEBERT_ATTN_TARGET inline void codes(const float* x, int rows, int cols, int stride, float step, int qn, int qp,
                                     int8_t* out, int rs, int cs) {
  const float lo = static_cast<float>(qn), hi = static_cast<float>(qp);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      out[r * rs + c * cs] = static_cast<int8_t>(round_clamp(x[static_cast<size_t>(r) * stride + c] / step, lo, hi));
}

struct Head {  // one head's scratch, reused across calls
  std::vector<int8_t> qc, kt, vt;  // [L][D], [D][L], [D][L] (the portable loops; the packed path does not use them)
  std::vector<int32_t> vsum, acc;  // [Dp16], [max(L, D)]
  std::vector<float> probs;        // [L][L]
  std::vector<uint8_t> u;          // [L]
  float min = 0;
#if defined(BEBERT_ATTN_PACKED)
  std::vector<uint8_t> qu, um;     // q codes + 2^(b-1) [L][Dp16]; probability codes [L][Lp4]
  std::vector<int8_t> kp, vp;      // k codes [Dp4/4][Lp16][4]; v codes [Lp4/4][Dp16][4]
  std::vector<int32_t> ksum, c;    // sum_d k codes [Lp16]; products [L][max(Lp16, Dp16)]
#endif
};

#if defined(BEBERT_ATTN_PACKED)
constexpr int round_up(int x, int m) { return (x + m - 1) / m * m; }

// Whether the packed products are exact for codes of `bits` bits (vpmaddubsw saturates a pair past int16).
constexpr bool packed_exact(int bits) {
#if defined(BEBERT_ATTN_VNNI)
  return bits >= 1;
#else
  return bits <= 7;
#endif
}

#if defined(BEBERT_ATTN_VNNI)
// C[i][n] = sum_k A[i][k] * B[k][n] for i < M, n < 16 * nv, exact in int32: A uint8 [M][4 * kg] (row stride lda),
// B int8 packed [kg][16 * nv][4] (4 consecutive k of one column n in 4 bytes). One vpdpbusd multiplies the 4 k of
// 16 columns by the broadcast 4 k of a row of A and adds them into the 16 int32 lanes. Blocks of MR rows x W
// column vectors: every B vector loaded serves MR rows, and MR * W independent sums hide vpdpbusd's latency (one
// row at a time left 4 dependent chains and ran ~1.5x slower on Zen 4).
constexpr int kColsPerVec = 16, kGemmRows = 4;
using IVec = __m512i;
BEBERT_ATTN_TARGET inline IVec ivec_zero() { return _mm512_setzero_si512(); }
BEBERT_ATTN_TARGET inline IVec ivec_load(const int8_t* p) { return _mm512_loadu_si512(p); }
BEBERT_ATTN_TARGET inline void ivec_store(int32_t* p, IVec v) { _mm512_storeu_si512(p, v); }
BEBERT_ATTN_TARGET inline IVec dot4_add(IVec acc, IVec a_u8, IVec b_s8) { return _mm512_dpbusd_epi32(acc, a_u8, b_s8); }
BEBERT_ATTN_TARGET inline IVec bcast4(int32_t a4) { return _mm512_set1_epi32(a4); }
#elif defined(BEBERT_ATTN_AVX2)
// The AVX2 form of the same products: vpmaddubsw sums pairs of u8 x s8 products into int16 (exact for bits <= 7:
// |pair| <= 2 * 127 * 64), vpmaddwd with ones adds the pairs into int32; 8 columns per vector.
constexpr int kColsPerVec = 8, kGemmRows = 2;
using IVec = __m256i;
BEBERT_ATTN_TARGET inline IVec ivec_zero() { return _mm256_setzero_si256(); }
BEBERT_ATTN_TARGET inline IVec ivec_load(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
BEBERT_ATTN_TARGET inline void ivec_store(int32_t* p, IVec v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
BEBERT_ATTN_TARGET inline IVec dot4_add(IVec acc, IVec a_u8, IVec b_s8) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a_u8, b_s8), _mm256_set1_epi16(1)));
}
BEBERT_ATTN_TARGET inline IVec bcast4(int32_t a4) { return _mm256_set1_epi32(a4); }
#elif defined(BEBERT_ATTN_NEON)
// The NEON form (no sdot on the Pi 4's A72): smull / smull2 multiply the 16 bytes (4 k of 4 columns) into int16,
// sadalp adds adjacent pairs into two int32 accumulators (lanes: column 0, 0, 1, 1 and 2, 2, 3, 3), and the store
// adds those pairs (addp). The unsigned codes are < 128 for bits <= 7, so signed bytes hold them.
constexpr int kColsPerVec = 4, kGemmRows = 2;
struct IVec {
  int32x4_t lo, hi;
};
BEBERT_ATTN_TARGET inline IVec ivec_zero() { return {vdupq_n_s32(0), vdupq_n_s32(0)}; }
BEBERT_ATTN_TARGET inline IVec ivec_load(const int8_t* p) {
  const int32x4_t v = vreinterpretq_s32_s8(vld1q_s8(p));
  return {v, v};  // (only .lo is read: the B operand)
}
BEBERT_ATTN_TARGET inline void ivec_store(int32_t* p, IVec v) { vst1q_s32(p, vpaddq_s32(v.lo, v.hi)); }
BEBERT_ATTN_TARGET inline IVec dot4_add(IVec acc, IVec a_u8, IVec b_s8) {
  const int8x16_t a = vreinterpretq_s8_s32(a_u8.lo), b = vreinterpretq_s8_s32(b_s8.lo);
  return {vpadalq_s16(acc.lo, vmull_s8(vget_low_s8(a), vget_low_s8(b))), vpadalq_s16(acc.hi, vmull_high_s8(a, b))};
}
BEBERT_ATTN_TARGET inline IVec bcast4(int32_t a4) {
  const int32x4_t v = vdupq_n_s32(a4);
  return {v, v};
}
#endif

template <int MR, int W>
BEBERT_ATTN_TARGET inline void gemm_block(const uint8_t* A, int lda, int kg, const int8_t* B, int N, int c0, int32_t* C,
                                          int ldc) {
  IVec acc[MR][W];
  for (int r = 0; r < MR; ++r)
    for (int t = 0; t < W; ++t) acc[r][t] = ivec_zero();
  for (int g = 0; g < kg; ++g) {
    const int8_t* bg = B + (static_cast<size_t>(g) * N + c0) * 4;
    IVec bv[W];
    for (int t = 0; t < W; ++t) bv[t] = ivec_load(bg + 4 * kColsPerVec * t);
    for (int r = 0; r < MR; ++r) {
      int32_t a4;
      std::memcpy(&a4, A + static_cast<size_t>(r) * lda + 4 * g, 4);
      const IVec av = bcast4(a4);
      for (int t = 0; t < W; ++t) acc[r][t] = dot4_add(acc[r][t], av, bv[t]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int t = 0; t < W; ++t) ivec_store(C + static_cast<size_t>(r) * ldc + c0 + kColsPerVec * t, acc[r][t]);
}

template <int MR>
BEBERT_ATTN_TARGET inline void gemm_rows(const uint8_t* A, int lda, int kg, const int8_t* B, int N, int32_t* C, int ldc) {
  int c0 = 0;
  for (; c0 + 4 * kColsPerVec <= N; c0 += 4 * kColsPerVec) gemm_block<MR, 4>(A, lda, kg, B, N, c0, C, ldc);
  for (; c0 < N; c0 += kColsPerVec) gemm_block<MR, 1>(A, lda, kg, B, N, c0, C, ldc);
}

// C[i][n] = sum_k A[i][k] * B[k][n] for i < M, n < N (a multiple of 16), exact in int32: A uint8 [M][4 * kg]
// (row stride lda), B int8 packed [kg][N][4] (4 consecutive k of one column n in 4 bytes), C row stride ldc.
BEBERT_ATTN_TARGET inline void gemm_u8s8(const uint8_t* A, int M, int lda, int kg, const int8_t* B, int N, int32_t* C,
                                         int ldc) {
  int i = 0;
  for (; i + kGemmRows <= M; i += kGemmRows)
    gemm_rows<kGemmRows>(A + static_cast<size_t>(i) * lda, lda, kg, B, N, C + static_cast<size_t>(i) * ldc, ldc);
  for (; i < M; ++i) gemm_rows<1>(A + static_cast<size_t>(i) * lda, lda, kg, B, N, C + static_cast<size_t>(i) * ldc, ldc);
}

// The codes of x[0..n) (n <= 16) as int8, zero past n: round_clamp(x / step, lo, hi), 16 at a time with the same
// float operations (a NaN gives lo in both: max_ps returns its second operand for a NaN first one). Lanes past n
// load 0, whose code is 0 (lo <= 0 <= hi).
#if defined(BEBERT_ATTN_VNNI)
BEBERT_ATTN_TARGET inline __m128i codes16(const float* x, int n, float step, float lo, float hi) {
  const __mmask16 m = n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
  __m512 f = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x), _mm512_set1_ps(step));
  f = _mm512_roundscale_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(lo)), _mm512_set1_ps(hi));
  return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(f));
}

// acc[0..16) += the 16 codes of c (sign-extended).
BEBERT_ATTN_TARGET inline void add_codes16(int32_t* acc, __m128i c) {
  _mm512_storeu_si512(acc, _mm512_add_epi32(_mm512_loadu_si512(acc), _mm512_cvtepi8_epi32(c)));
}
#elif defined(BEBERT_ATTN_AVX2)
BEBERT_ATTN_TARGET inline __m256 codes8_float(const float* x, int n, float step, float lo, float hi) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(std::max(n, 0)), idx);
  __m256 f = _mm256_div_ps(_mm256_maskload_ps(x, m), _mm256_set1_ps(step));
  f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_min_ps(_mm256_max_ps(f, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
}

BEBERT_ATTN_TARGET inline __m128i codes16(const float* x, int n, float step, float lo, float hi) {
  const __m256i i0 = _mm256_cvtps_epi32(codes8_float(x, n, step, lo, hi));
  const __m256i i1 = _mm256_cvtps_epi32(codes8_float(x + 8, n - 8, step, lo, hi));
  // packs works within 128-bit lanes: (i0 lo, i1 lo, i0 hi, i1 hi) as int16, reordered to i0, i1, then to int8
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(i0, i1), 0xD8);
  return _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

BEBERT_ATTN_TARGET inline void add_codes16(int32_t* acc, __m128i c) {
  __m256i* p = reinterpret_cast<__m256i*>(acc);
  _mm256_storeu_si256(p, _mm256_add_epi32(_mm256_loadu_si256(p), _mm256_cvtepi8_epi32(c)));
  _mm256_storeu_si256(p + 1, _mm256_add_epi32(_mm256_loadu_si256(p + 1), _mm256_cvtepi8_epi32(_mm_srli_si128(c, 8))));
}
#endif

#if defined(BEBERT_ATTN_NEON)
using B16 = int8x16_t;  // 16 codes
// frintn rounds half to even; fmaxnm / fminnm return the number when the other operand is NaN, so a NaN gives lo
// as round_clamp does.
BEBERT_ATTN_TARGET inline B16 codes16(const float* x, int n, float step, float lo, float hi) {
  float buf[16] = {};
  const float* src = x;
  if (n < 16) {
    for (int t = 0; t < n; ++t) buf[t] = x[t];
    src = buf;
  }
  int16x4_t w[4];
  for (int t = 0; t < 4; ++t) {
    float32x4_t f = vrndnq_f32(vdivq_f32(vld1q_f32(src + 4 * t), vdupq_n_f32(step)));
    f = vminnmq_f32(vmaxnmq_f32(f, vdupq_n_f32(lo)), vdupq_n_f32(hi));
    w[t] = vmovn_s32(vcvtq_s32_f32(f));
  }
  return vcombine_s8(vmovn_s16(vcombine_s16(w[0], w[1])), vmovn_s16(vcombine_s16(w[2], w[3])));
}
BEBERT_ATTN_TARGET inline void add_codes16(int32_t* acc, B16 c) {
  const int16x8_t l = vmovl_s8(vget_low_s8(c)), h = vmovl_high_s8(c);
  vst1q_s32(acc, vaddq_s32(vld1q_s32(acc), vmovl_s16(vget_low_s16(l))));
  vst1q_s32(acc + 4, vaddq_s32(vld1q_s32(acc + 4), vmovl_high_s16(l)));
  vst1q_s32(acc + 8, vaddq_s32(vld1q_s32(acc + 8), vmovl_s16(vget_low_s16(h))));
  vst1q_s32(acc + 12, vaddq_s32(vld1q_s32(acc + 12), vmovl_high_s16(h)));
}
BEBERT_ATTN_TARGET inline int32_t codes16_sum(B16 c) { return vaddlvq_s8(c); }
BEBERT_ATTN_TARGET inline B16 b16_zero() { return vdupq_n_s8(0); }
BEBERT_ATTN_TARGET inline B16 b16_add(B16 a, int8_t v) { return vaddq_s8(a, vdupq_n_s8(v)); }
BEBERT_ATTN_TARGET inline void b16_store(void* p, B16 v) { vst1q_s8(static_cast<int8_t*>(p), v); }
// out[4 e + t] = r[t][e] for e < 16, t < 4 (64 bytes)
BEBERT_ATTN_TARGET inline void store_transposed4(int8_t* out, const B16 (&r)[4]) {
  const int8x16_t ab_lo = vzip1q_s8(r[0], r[1]), ab_hi = vzip2q_s8(r[0], r[1]);
  const int8x16_t cd_lo = vzip1q_s8(r[2], r[3]), cd_hi = vzip2q_s8(r[2], r[3]);
  const auto z1 = [](int8x16_t a, int8x16_t b) {
    return vreinterpretq_s8_s16(vzip1q_s16(vreinterpretq_s16_s8(a), vreinterpretq_s16_s8(b)));
  };
  const auto z2 = [](int8x16_t a, int8x16_t b) {
    return vreinterpretq_s8_s16(vzip2q_s16(vreinterpretq_s16_s8(a), vreinterpretq_s16_s8(b)));
  };
  vst1q_s8(out, z1(ab_lo, cd_lo));
  vst1q_s8(out + 16, z2(ab_lo, cd_lo));
  vst1q_s8(out + 32, z1(ab_hi, cd_hi));
  vst1q_s8(out + 48, z2(ab_hi, cd_hi));
}
#else
using B16 = __m128i;
// Sum of the 16 int8 codes of c: psadbw over the codes offset to unsigned, less 16 * 128.
BEBERT_ATTN_TARGET inline int32_t codes16_sum(__m128i c) {
  const __m128i sad = _mm_sad_epu8(_mm_xor_si128(c, _mm_set1_epi8(static_cast<char>(0x80))), _mm_setzero_si128());
  return _mm_cvtsi128_si32(sad) + _mm_extract_epi16(sad, 4) - 16 * 128;
}
BEBERT_ATTN_TARGET inline B16 b16_zero() { return _mm_setzero_si128(); }
BEBERT_ATTN_TARGET inline B16 b16_add(B16 a, int8_t v) { return _mm_add_epi8(a, _mm_set1_epi8(static_cast<char>(v))); }
BEBERT_ATTN_TARGET inline void b16_store(void* p, B16 v) { _mm_storeu_si128(static_cast<__m128i*>(p), v); }
// out[4 e + t] = r[t][e] for e < 16, t < 4 (64 bytes)
BEBERT_ATTN_TARGET inline void store_transposed4(int8_t* out, const B16 (&r)[4]) {
  const __m128i ab_lo = _mm_unpacklo_epi8(r[0], r[1]), ab_hi = _mm_unpackhi_epi8(r[0], r[1]);
  const __m128i cd_lo = _mm_unpacklo_epi8(r[2], r[3]), cd_hi = _mm_unpackhi_epi8(r[2], r[3]);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_unpacklo_epi16(ab_lo, cd_lo));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm_unpackhi_epi16(ab_lo, cd_lo));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32), _mm_unpacklo_epi16(ab_hi, cd_hi));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 48), _mm_unpackhi_epi16(ab_hi, cd_hi));
}
#endif

// The packed operands of head h: q codes + off (rows of Dp16 bytes), k codes by 4 dims per column with their sums,
// v codes by 4 keys per column with their sums over keys. Codes are computed row by row (vectorised) and written
// straight into these layouts: a transposed-then-repacked version spent most of the kernel in byte scatters.
BEBERT_ATTN_TARGET inline void pack_head(const AttentionArgs& a, size_t base, Head& s) {
  const int L = a.L, D = a.head_dim, H = input_stride(a), qn = -(1 << (a.bits - 1)), qp = (1 << (a.bits - 1)) - 1;
  const int Dp4 = round_up(D, 4), Lp16 = round_up(L, 16), Lp4 = round_up(L, 4), Dp16 = round_up(D, 16);
  const float lo = static_cast<float>(qn), hi = static_cast<float>(qp);
  s.qu.assign(static_cast<size_t>(L) * Dp16, 0);
  s.kp.assign(static_cast<size_t>(Dp4) * Lp16, 0);
  s.vp.assign(static_cast<size_t>(Lp4) * Dp16, 0);
  s.ksum.assign(Lp16, 0);
  s.vsum.assign(Dp16, 0);
  for (int i = 0; i < L; ++i) {  // (bytes D..Dp16 of a row meet zero k codes: they add nothing)
    const float* x = a.q + base + static_cast<size_t>(i) * H;
    uint8_t* qu = s.qu.data() + static_cast<size_t>(i) * Dp16;
    for (int d = 0; d < D; d += 16) b16_store(qu + d, b16_add(codes16(x + d, D - d, a.step_q, lo, hi), static_cast<int8_t>(-qn)));
  }
  for (int j = 0; j < L; ++j) {
    const float* x = a.k + base + static_cast<size_t>(j) * H;
    int32_t sum = 0;
    for (int d = 0; d < D; d += 16) {
      const B16 c = codes16(x + d, D - d, a.step_k, lo, hi);
      sum += codes16_sum(c);
      alignas(16) int32_t g4[4];
      b16_store(g4, c);
      for (int g = 0; g < 4 && d + 4 * g < D; ++g)
        std::memcpy(s.kp.data() + (static_cast<size_t>(d / 4 + g) * Lp16 + j) * 4, g4 + g, 4);
    }
    s.ksum[j] = sum;
  }
  for (int j4 = 0; j4 < Lp4 / 4; ++j4) {
    for (int e = 0; e < D; e += 16) {
      B16 r[4];
      for (int t = 0; t < 4; ++t) {
        const int j = 4 * j4 + t;
        r[t] = j < L ? codes16(a.v + base + static_cast<size_t>(j) * H + e, D - e, a.step_v, lo, hi) : b16_zero();
        add_codes16(s.vsum.data() + e, r[t]);
      }
      // 4 x 16 byte transpose: bytes (r0[e], r1[e], r2[e], r3[e]) for e = 0..15 in order
      store_transposed4(s.vp.data() + (static_cast<size_t>(j4) * Dp16 + e) * 4, r);  // e + 16 <= Dp16: in bounds
    }
  }
}
#endif

// Phase 1 of head h: codes, scores, softmax; records the head's smallest probability.
BEBERT_ATTN_TARGET void head_softmax(const AttentionArgs& a, int b, int h, Head& s) {
  const int L = a.L, D = a.head_dim, H = input_stride(a), qn = -(1 << (a.bits - 1)), qp = (1 << (a.bits - 1)) - 1;
  const size_t base = static_cast<size_t>(b) * L * H + static_cast<size_t>(h) * D;  // of q, k and v
  s.acc.resize(std::max(L, D));
  s.probs.resize(static_cast<size_t>(L) * L);
  s.u.resize(L);
  // Multiplications by a scale and by 1 / total where the PyTorch layer divides (by sqrt(D), by the row sum): a
  // vector division has a fraction of a multiplication's throughput (measured here: within noise of the rest of
  // this function on Zen 4). The results differ by at most an ulp (OPS.md), the same on every ISA.
  const float score_scale = (a.step_q * a.step_k) / std::sqrt(static_cast<float>(D));
  const float* mask = a.mask_add + static_cast<size_t>(b) * L;
  int32_t* acc = s.acc.data();
  float head_min = 1.0f;
#if defined(BEBERT_ATTN_PACKED)
  // q codes offset to unsigned (q + 2^(b-1)): sum_d q k = (sum_d (q + off) k) - off * ksum.
  const bool packed = packed_exact(a.bits);
  const int Lp16 = round_up(L, 16), Dp16 = round_up(D, 16), off = -qn;
  if (packed) {
    pack_head(a, base, s);
    s.c.resize(static_cast<size_t>(L) * std::max(Lp16, Dp16));
    s.um.resize(static_cast<size_t>(L) * round_up(L, 4));
    const int Dp4 = round_up(D, 4);
    gemm_u8s8(s.qu.data(), L, Dp16, Dp4 / 4, s.kp.data(), Lp16, s.c.data(), Lp16);
  } else
#endif
  {
    s.qc.resize(static_cast<size_t>(L) * D);
    s.kt.resize(static_cast<size_t>(L) * D);
    s.vt.resize(static_cast<size_t>(L) * D);
    s.vsum.assign(D, 0);
    codes(a.q + base, L, D, H, a.step_q, qn, qp, s.qc.data(), D, 1);
    codes(a.k + base, L, D, H, a.step_k, qn, qp, s.kt.data(), 1, L);
    codes(a.v + base, L, D, H, a.step_v, qn, qp, s.vt.data(), 1, L);
    for (int e = 0; e < D; ++e) {
      int32_t sum = 0;
      for (int j = 0; j < L; ++j) sum += s.vt[static_cast<size_t>(e) * L + j];
      s.vsum[e] = sum;
    }
  }
  for (int i = 0; i < L; ++i) {
#if defined(BEBERT_ATTN_PACKED)
    if (packed) {
      const int32_t* ci = s.c.data() + static_cast<size_t>(i) * Lp16;
      for (int j = 0; j < L; ++j) acc[j] = ci[j] - off * s.ksum[j];
    } else
#endif
    {
      std::fill(acc, acc + L, 0);
      for (int d = 0; d < D; ++d) {
        const int32_t qv = s.qc[static_cast<size_t>(i) * D + d];
        const int8_t* kr = s.kt.data() + static_cast<size_t>(d) * L;
        if (qv)
          for (int j = 0; j < L; ++j) acc[j] += qv * kr[j];
      }
    }
    const float row_min = softmax_row(acc, mask, score_scale, L, s.probs.data() + static_cast<size_t>(i) * L);
    head_min = row_min < head_min ? row_min : head_min;
  }
  s.min = head_min;
}

// Phase 2 of head h: the probabilities' LSQ codes (minimum pmin of the whole example) times the value codes.
BEBERT_ATTN_TARGET void head_context(const AttentionArgs& a, int b, int h, Head& s, float pmin) {
  const int L = a.L, D = a.head_dim, H = a.heads * D;
  const float up = static_cast<float>((1 << a.bits) - 1);
#if defined(BEBERT_ATTN_PACKED)
  if (packed_exact(a.bits)) {
    const int Lp4 = round_up(L, 4), Dp16 = round_up(D, 16);
    for (int i = 0; i < L; ++i) {
      const float* p = s.probs.data() + static_cast<size_t>(i) * L;
      uint8_t* u = s.um.data() + static_cast<size_t>(i) * Lp4;
      for (int j = 0; j < L; ++j) u[j] = static_cast<uint8_t>(round_clamp((p[j] - pmin) / a.step_p, 0.0f, up));
      for (int j = L; j < Lp4; ++j) u[j] = 0;
    }
    gemm_u8s8(s.um.data(), L, Lp4, Lp4 / 4, s.vp.data(), Dp16, s.c.data(), Dp16);
    for (int i = 0; i < L; ++i) {
      const int32_t* ci = s.c.data() + static_cast<size_t>(i) * Dp16;
      float* o = a.out + (static_cast<size_t>(b) * L + i) * H + static_cast<size_t>(h) * D;
      for (int e = 0; e < D; ++e)
        o[e] = (static_cast<float>(ci[e]) * a.step_p + pmin * static_cast<float>(s.vsum[e])) * a.step_v;
    }
    return;
  }
#endif
  uint8_t* u = s.u.data();
  for (int i = 0; i < L; ++i) {
    const float* p = s.probs.data() + static_cast<size_t>(i) * L;
    for (int j = 0; j < L; ++j) u[j] = static_cast<uint8_t>(round_clamp((p[j] - pmin) / a.step_p, 0.0f, up));
    float* o = a.out + (static_cast<size_t>(b) * L + i) * H + static_cast<size_t>(h) * D;
    for (int e = 0; e < D; ++e) {
      // u (0..2^b-1) times the value codes: an unsigned x signed byte dot product
      const int8_t* vr = s.vt.data() + static_cast<size_t>(e) * L;
      int32_t acc = 0;
      for (int j = 0; j < L; ++j) acc += static_cast<int32_t>(u[j]) * static_cast<int32_t>(vr[j]);
      o[e] = (static_cast<float>(acc) * a.step_p + pmin * static_cast<float>(s.vsum[e])) * a.step_v;
    }
  }
}

inline void run(const AttentionArgs& a) {
  thread_local std::vector<Head> scratch;  // the caller's scratch: tasks of one call write disjoint heads
  if (static_cast<int>(scratch.size()) < a.heads) scratch.resize(a.heads);
  std::vector<Head>& heads = scratch;  // a reference, so the worker threads see the caller's buffers, not their own
  for (int b = 0; b < a.B; ++b) {
    parallel_for(a.heads, a.threads, [&](int h) { head_softmax(a, b, h, heads[h]); });
    float pmin = heads[0].min;
    for (int h = 1; h < a.heads; ++h) pmin = std::min(pmin, heads[h].min);
    parallel_for(a.heads, a.threads, [&](int h) { head_context(a, b, h, heads[h], pmin); });
  }
}

}  // namespace BEBERT_ATTN_NS
}  // namespace bebert
