// The one implementation of quant_attention (attention.h), compiled once per ISA: each attention_<isa>.cc defines
// BEBERT_ATTN_NS (a namespace name) and BEBERT_ATTN_TARGET (the function attribute that selects the ISA) and then
// includes this file; the AVX-512 instance also defines BEBERT_ATTN_VNNI, which computes the two integer products
// (Q.K and P.V) with vpdpbusd on packed layouts instead of the portable loops (integers: same results). The loops are written for the compiler's vectoriser (contiguous int8 / int32 / float rows,
// partial sums in 16 explicit lanes); every float operation happens in the same order on every ISA and nothing
// is contracted (-ffp-contract=off), so all paths give bit-identical results.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../core/thread_pool.h"
#include "attention.h"
#if defined(BEBERT_ATTN_VNNI)
#include <immintrin.h>
#endif

namespace bebert {
namespace BEBERT_ATTN_NS {

constexpr int kLanes = 16;

// exp(x) for x <= 0 (softmax after subtracting the row maximum); 0 below -87.3. Cody-Waite reduction by ln 2 in
// two parts and Cephes' degree-6 polynomial for e^r on [-ln2/2, ln2/2]: within 2 ulp of expf.
BEBERT_ATTN_TARGET inline float exp_approx(float x) {
  // Clamped into [-87.3, 0] first (NaN to -87.3), so the conversion to int below is always defined.
  float xc = x > -87.3f ? x : -87.3f;
  xc = xc < 0.0f ? xc : 0.0f;
  const float n = std::nearbyint(xc * 1.44269504088896341f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = (p * r) * r + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
  float scale;
  std::memcpy(&scale, &bits, 4);
  const float y = x < -87.3f ? 0.0f : p * scale;
  return x != x ? x : y;  // NaN stays NaN
}

// Sum of x[0..n) in a fixed order: 16 running lanes, then a pairwise tree.
BEBERT_ATTN_TARGET inline float lane_sum(const float* x, int n) {
  float lane[kLanes] = {};
  int j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int t = 0; t < kLanes; ++t) lane[t] += x[j + t];
  for (int t = 0; j + t < n; ++t) lane[t] += x[j + t];
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int t = 0; t < w; ++t) lane[t] += lane[t + w];
  return lane[0];
}

// max / min of x[0..n) (n >= 1): 16 running lanes (lane t sees x[j] for j = t mod 16), then lane 0 takes the
// tail and the lanes are folded in order. The lanes are held in vectors of BEBERT_ATTN_VEC_FLOATS floats (GCC /
// Clang vector extensions, the instance's native width; 1 in the scalar reference): with plain arrays GCC 12
// kept these loops scalar (a conditional it would not if-convert). `v > l ? v : l` per lane is exactly the
// scalar select (and maxps) on every ISA, so every instance gives the same result.
#ifndef BEBERT_ATTN_VEC_FLOATS
#define BEBERT_ATTN_VEC_FLOATS 1
#endif
constexpr int kVecFloats = BEBERT_ATTN_VEC_FLOATS, kVecs = kLanes / kVecFloats;
typedef float VecF __attribute__((vector_size(4 * BEBERT_ATTN_VEC_FLOATS)));

template <bool kMax>
BEBERT_ATTN_TARGET inline float lane_extreme(const float* x, int n) {
  VecF lane[kVecs];
  for (int u = 0; u < kVecs; ++u)
    for (int t = 0; t < kVecFloats; ++t) lane[u][t] = x[0];
  int j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int u = 0; u < kVecs; ++u) {
      VecF v;
      std::memcpy(&v, x + j + u * kVecFloats, sizeof v);
      lane[u] = kMax ? (v > lane[u] ? v : lane[u]) : (v < lane[u] ? v : lane[u]);
    }
  float m = lane[0][0];
  for (; j < n; ++j) m = kMax ? (x[j] > m ? x[j] : m) : (x[j] < m ? x[j] : m);
  lane[0][0] = m;
  for (int t = 1; t < kLanes; ++t) {
    const float l = lane[t / kVecFloats][t % kVecFloats];
    m = kMax ? (l > m ? l : m) : (l < m ? l : m);
  }
  return m;
}
BEBERT_ATTN_TARGET inline float lane_max(const float* x, int n) { return lane_extreme<true>(x, n); }
BEBERT_ATTN_TARGET inline float lane_min(const float* x, int n) { return lane_extreme<false>(x, n); }

// clamp(nearbyint(v), lo, hi) as float (NaN gives lo, so the integer conversion after it is always defined);
// written as two selects so that loops over it vectorise.
BEBERT_ATTN_TARGET inline float round_clamp(float v, float lo, float hi) {
  float q = std::nearbyint(v);
  q = q >= lo ? q : lo;
  return q <= hi ? q : hi;
}

// codes[r * cs + c * ds] = clamp(nearbyint(x[r * stride + c] / step), qn, qp) for rows r < rows, columns c < cols.
BEBERT_ATTN_TARGET inline void codes(const float* x, int rows, int cols, int stride, float step, int qn, int qp,
                                     int8_t* out, int rs, int cs) {
  const float lo = static_cast<float>(qn), hi = static_cast<float>(qp);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      out[r * rs + c * cs] = static_cast<int8_t>(round_clamp(x[static_cast<size_t>(r) * stride + c] / step, lo, hi));
}

struct Head {  // one head's scratch, reused across calls
  std::vector<int8_t> qc, kt, vt;  // [L][D], [D][L], [D][L] (not used with VNNI: codes go to the packed layouts)
  std::vector<int32_t> vsum, acc;  // [D], [max(L, D)]
  std::vector<float> probs;        // [L][L]
  std::vector<uint8_t> u;          // [L]
  float min = 0;
#if defined(BEBERT_ATTN_VNNI)
  std::vector<uint8_t> qu, um;     // q codes + 2^(b-1) [L][Dp4]; probability codes [L][Lp4]
  std::vector<int8_t> kp, vp;      // k codes [Dp4/4][Lp16][4]; v codes [Lp4/4][Dp16][4]
  std::vector<int32_t> ksum, c;    // sum_d k codes [Lp16]; products [L][max(Lp16, Dp16)]
#endif
};

#if defined(BEBERT_ATTN_VNNI)
constexpr int round_up(int x, int m) { return (x + m - 1) / m * m; }

// C[i][n] = sum_k A[i][k] * B[k][n] for i < M, n < 16 * nv, exact in int32: A uint8 [M][4 * kg] (row stride lda),
// B int8 packed [kg][16 * nv][4] (4 consecutive k of one column n in 4 bytes). One vpdpbusd multiplies the 4 k of
// 16 columns by the broadcast 4 k of a row of A and adds them into the 16 int32 lanes. Blocks of MR rows x W
// column vectors: every B vector loaded serves MR rows, and MR * W independent sums hide vpdpbusd's latency (one
// row at a time left 4 dependent chains and ran ~1.5x slower on Zen 4).
template <int MR, int W>
BEBERT_ATTN_TARGET inline void gemm_block(const uint8_t* A, int lda, int kg, const int8_t* B, int N, int v0, int32_t* C,
                                          int ldc) {
  __m512i acc[MR][W];
  for (int r = 0; r < MR; ++r)
    for (int t = 0; t < W; ++t) acc[r][t] = _mm512_setzero_si512();
  for (int g = 0; g < kg; ++g) {
    const int8_t* bg = B + (static_cast<size_t>(g) * N + 16 * v0) * 4;
    __m512i bv[W];
    for (int t = 0; t < W; ++t) bv[t] = _mm512_loadu_si512(bg + 64 * t);
    for (int r = 0; r < MR; ++r) {
      int32_t a4;
      std::memcpy(&a4, A + static_cast<size_t>(r) * lda + 4 * g, 4);
      const __m512i av = _mm512_set1_epi32(a4);
      for (int t = 0; t < W; ++t) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], av, bv[t]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int t = 0; t < W; ++t) _mm512_storeu_si512(C + static_cast<size_t>(r) * ldc + 16 * (v0 + t), acc[r][t]);
}

template <int MR>
BEBERT_ATTN_TARGET inline void gemm_rows(const uint8_t* A, int lda, int kg, const int8_t* B, int nv, int32_t* C, int ldc) {
  const int N = 16 * nv;
  int v0 = 0;
  for (; v0 + 4 <= nv; v0 += 4) gemm_block<MR, 4>(A, lda, kg, B, N, v0, C, ldc);
  for (; v0 < nv; ++v0) gemm_block<MR, 1>(A, lda, kg, B, N, v0, C, ldc);
}

BEBERT_ATTN_TARGET inline void gemm_u8s8(const uint8_t* A, int M, int lda, int kg, const int8_t* B, int nv, int32_t* C,
                                         int ldc) {
  int i = 0;
  for (; i + 4 <= M; i += 4)
    gemm_rows<4>(A + static_cast<size_t>(i) * lda, lda, kg, B, nv, C + static_cast<size_t>(i) * ldc, ldc);
  for (; i < M; ++i) gemm_rows<1>(A + static_cast<size_t>(i) * lda, lda, kg, B, nv, C + static_cast<size_t>(i) * ldc, ldc);
}

BEBERT_ATTN_TARGET inline __mmask16 first_n16(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << std::max(n, 0)) - 1u);
}

// The codes of x[0..n) (n <= 16) as int8, zero past n: round_clamp(x / step, lo, hi), 16 at a time with the same
// float operations (a NaN gives lo in both: max_ps returns its second operand for a NaN first one).
BEBERT_ATTN_TARGET inline __m128i codes16(const float* x, int n, float step, float lo, float hi) {
  const __mmask16 m = first_n16(n);
  __m512 f = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x), _mm512_set1_ps(step));
  f = _mm512_roundscale_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(lo)), _mm512_set1_ps(hi));
  return _mm_maskz_mov_epi8(m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(f)));
}

// Sum of the 16 int32 lanes (stored and added in order: GCC 12's reduce intrinsic trips -Wmaybe-uninitialized).
BEBERT_ATTN_TARGET inline int32_t lanes_sum(__m512i v) {
  alignas(64) int32_t t[16];
  _mm512_store_si512(t, v);
  int32_t total = 0;
  for (int i = 0; i < 16; ++i) total += t[i];
  return total;
}
#endif

// Phase 1 of head h: codes, scores, softmax; records the head's smallest probability.
BEBERT_ATTN_TARGET void head_softmax(const AttentionArgs& a, int b, int h, Head& s) {
  const int L = a.L, D = a.head_dim, H = a.heads * D, qn = -(1 << (a.bits - 1)), qp = (1 << (a.bits - 1)) - 1;
  const size_t base = static_cast<size_t>(b) * L * H + static_cast<size_t>(h) * D;
#if !defined(BEBERT_ATTN_VNNI)
  s.qc.resize(static_cast<size_t>(L) * D);
  s.kt.resize(static_cast<size_t>(L) * D);
  s.vt.resize(static_cast<size_t>(L) * D);
#endif
  s.vsum.assign(D, 0);
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
#if defined(BEBERT_ATTN_VNNI)
  // Integer products by VNNI: q codes offset to unsigned (q + 2^(b-1)), so sum_d q k = (sum_d (q + off) k) - off * ksum.
  // The codes are computed row by row (contiguous, vectorised) and written straight into the packed layouts: the
  // transposed-then-repacked version spent most of this function in byte scatters (perf on Zen 4).
  const int Dp4 = round_up(D, 4), Lp16 = round_up(L, 16), Lp4 = round_up(L, 4), Dp16 = round_up(D, 16);
  const int off = 1 << (a.bits - 1);
  s.qu.assign(static_cast<size_t>(L) * Dp4, 0);
  s.kp.assign(static_cast<size_t>(Dp4) * Lp16, 0);
  s.vp.assign(static_cast<size_t>(Lp4) * Dp16, 0);
  s.ksum.assign(Lp16, 0);
  s.c.resize(static_cast<size_t>(L) * std::max(Lp16, Dp16));
  s.um.resize(static_cast<size_t>(L) * Lp4);
  const float lo = static_cast<float>(qn), hi = static_cast<float>(qp);
  const __m128i offv = _mm_set1_epi8(static_cast<char>(off));
  for (int i = 0; i < L; ++i) {  // q codes + off, row-major [L][Dp4]
    const float* x = a.q + base + static_cast<size_t>(i) * H;
    uint8_t* qu = s.qu.data() + static_cast<size_t>(i) * Dp4;
    for (int d = 0; d < D; d += 16)
      _mm_mask_storeu_epi8(qu + d, first_n16(D - d), _mm_add_epi8(codes16(x + d, D - d, a.step_q, lo, hi), offv));
  }
  for (int j = 0; j < L; ++j) {  // k codes: 4 dims of key j in the 4 bytes of column j, their sum in ksum[j]
    const float* x = a.k + base + static_cast<size_t>(j) * H;
    __m512i sum = _mm512_setzero_si512();
    for (int d = 0; d < D; d += 16) {
      const __m128i c = codes16(x + d, D - d, a.step_k, lo, hi);
      sum = _mm512_add_epi32(sum, _mm512_cvtepi8_epi32(c));
      alignas(16) int32_t g4[4];
      _mm_store_si128(reinterpret_cast<__m128i*>(g4), c);
      for (int g = 0; g < 4 && d + 4 * g < D; ++g)
        std::memcpy(s.kp.data() + (static_cast<size_t>(d / 4 + g) * Lp16 + j) * 4, g4 + g, 4);
    }
    s.ksum[j] = lanes_sum(sum);
  }
  for (int j4 = 0; j4 < Lp4 / 4; ++j4) {  // v codes: keys 4 j4 .. 4 j4 + 3 of dim e in 4 bytes, sums in vsum
    for (int e = 0; e < D; e += 16) {
      __m128i r[4];
      __m512i vs = _mm512_maskz_loadu_epi32(first_n16(D - e), s.vsum.data() + e);
      for (int t = 0; t < 4; ++t) {
        const int j = 4 * j4 + t;
        r[t] = j < L ? codes16(a.v + base + static_cast<size_t>(j) * H + e, D - e, a.step_v, lo, hi) : _mm_setzero_si128();
        vs = _mm512_add_epi32(vs, _mm512_cvtepi8_epi32(r[t]));
      }
      _mm512_mask_storeu_epi32(s.vsum.data() + e, first_n16(D - e), vs);
      // 4 x 16 byte transpose: bytes (r0[e], r1[e], r2[e], r3[e]) for e = 0..15 in order
      const __m128i ab_lo = _mm_unpacklo_epi8(r[0], r[1]), ab_hi = _mm_unpackhi_epi8(r[0], r[1]);
      const __m128i cd_lo = _mm_unpacklo_epi8(r[2], r[3]), cd_hi = _mm_unpackhi_epi8(r[2], r[3]);
      int8_t* out = s.vp.data() + (static_cast<size_t>(j4) * Dp16 + e) * 4;  // e + 16 <= Dp16: in bounds
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_unpacklo_epi16(ab_lo, cd_lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm_unpackhi_epi16(ab_lo, cd_lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32), _mm_unpacklo_epi16(ab_hi, cd_hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 48), _mm_unpackhi_epi16(ab_hi, cd_hi));
    }
  }
  gemm_u8s8(s.qu.data(), L, Dp4, Dp4 / 4, s.kp.data(), Lp16 / 16, s.c.data(), Lp16);
#else
  codes(a.q + base, L, D, H, a.step_q, qn, qp, s.qc.data(), D, 1);
  codes(a.k + base, L, D, H, a.step_k, qn, qp, s.kt.data(), 1, L);
  codes(a.v + base, L, D, H, a.step_v, qn, qp, s.vt.data(), 1, L);
  for (int e = 0; e < D; ++e) {
    int32_t sum = 0;
    for (int j = 0; j < L; ++j) sum += s.vt[static_cast<size_t>(e) * L + j];
    s.vsum[e] = sum;
  }
#endif
  for (int i = 0; i < L; ++i) {
#if defined(BEBERT_ATTN_VNNI)
    const int32_t* ci = s.c.data() + static_cast<size_t>(i) * Lp16;
    for (int j = 0; j < L; ++j) acc[j] = ci[j] - off * s.ksum[j];
#else
    std::fill(acc, acc + L, 0);
    for (int d = 0; d < D; ++d) {
      const int32_t qv = s.qc[static_cast<size_t>(i) * D + d];
      const int8_t* kr = s.kt.data() + static_cast<size_t>(d) * L;
      if (qv)
        for (int j = 0; j < L; ++j) acc[j] += qv * kr[j];
    }
#endif
    float* p = s.probs.data() + static_cast<size_t>(i) * L;
    for (int j = 0; j < L; ++j) p[j] = static_cast<float>(acc[j]) * score_scale + mask[j];
    const float m = lane_max(p, L);
    for (int j = 0; j < L; ++j) p[j] = exp_approx(p[j] - m);
    const float total = lane_sum(p, L);
    const float inv_total = 1.0f / total;
    for (int j = 0; j < L; ++j) p[j] = p[j] * inv_total;
    const float row_min = lane_min(p, L);
    head_min = row_min < head_min ? row_min : head_min;
  }
  s.min = head_min;
}

// Phase 2 of head h: the probabilities' LSQ codes (minimum pmin of the whole example) times the value codes.
BEBERT_ATTN_TARGET void head_context(const AttentionArgs& a, int b, int h, Head& s, float pmin) {
  const int L = a.L, D = a.head_dim, H = a.heads * D;
  const float up = static_cast<float>((1 << a.bits) - 1);
#if defined(BEBERT_ATTN_VNNI)
  const int Lp4 = round_up(L, 4), Dp16 = round_up(D, 16);
  for (int i = 0; i < L; ++i) {
    const float* p = s.probs.data() + static_cast<size_t>(i) * L;
    uint8_t* u = s.um.data() + static_cast<size_t>(i) * Lp4;
    for (int j = 0; j < L; ++j) u[j] = static_cast<uint8_t>(round_clamp((p[j] - pmin) / a.step_p, 0.0f, up));
    for (int j = L; j < Lp4; ++j) u[j] = 0;
  }
  gemm_u8s8(s.um.data(), L, Lp4, Lp4 / 4, s.vp.data(), Dp16 / 16, s.c.data(), Dp16);
  for (int i = 0; i < L; ++i) {
    const int32_t* ci = s.c.data() + static_cast<size_t>(i) * Dp16;
    float* o = a.out + (static_cast<size_t>(b) * L + i) * H + static_cast<size_t>(h) * D;
    for (int e = 0; e < D; ++e)
      o[e] = (static_cast<float>(ci[e]) * a.step_p + pmin * static_cast<float>(s.vsum[e])) * a.step_v;
  }
#else
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
#endif
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
