// x86-64 AVX-512 hot loops (F/BW/VL + VBMI + VNNI + VPOPCNTDQ: Ice Lake / Sapphire Rapids / Zen 4 and later),
// compiled with function-level target attributes so the library still loads and runs on AVX2-only CPUs
// (bgemm.cc dispatches here only after isa_supported(Isa::kAvx512) checked every feature with cpuid).
//
// Table lookup (2..4-bit and sign activations), the layout in bgemm.h (LutPart) and lut_prepare.h:
// per quad of 16 weights one 64-byte table vector holds four 16-entry tables; vpermb looks up 16 rows x 4 groups
// at once and vpdpbusd with a vector of ones sums each row's 4 int8 lookups into its int32 lane. Per 256 weight
// x activation products that is one vpermb and one vpdpbusd, and the int32 sums never need widening. The
// epilogue (scale, zero offset, second TWS half, bias) runs on the accumulators in registers, with the same float
// operations in the same order as the shared epilogue in bgemm.cc, so integer modes stay bit-identical.
// Ideas from T-MAC (table lookup over weight-bit groups) and KERNEL-FACTS.md's VBMI notes; the code is ours.
//
// Sign activations (W1A1, BiBERT): VPOPCNTQ of (activation word XOR weight word) with 8 weight rows in the 8
// qword lanes and the activation word broadcast, so no per-output horizontal sum (KERNEL-FACTS.md's design note).
// 3 instructions per 512 products; on the Zen 4 development machine it ran 2-4x faster than the table path with
// sign tables (M = 128 and M = 1, 768..3072 wide, one thread), so sign activations always take it.
// 5..8-bit activations: VPOPCNTQ over AND of activation bit planes and weight rows, one horizontal sum per output
// (correct, rarely used, not tuned).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "../core/bitpack.h"
#include "bgemm.h"
#include "lut_prepare.h"

#if defined(__x86_64__)
// GCC 12's AVX-512 headers build some intrinsics (shifts, reductions) on a self-initialised `__Y` placeholder,
// which -Wmaybe-uninitialized reports in target-attribute functions: a false positive in the header, not here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

namespace bebert {
namespace {

#define BEBERT_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx512vpopcntdq,avx2,fma,popcnt,bmi2")))

BEBERT_AVX512 inline __mmask16 first_n16(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << std::max(n, 0)) - 1u);
}

// 16 centred codes v = clamp(nearbyint((x - offset) / step), qn, qp) - qn - 2^(B-1) (kSign: sign(x)), zero past
// `valid` elements; the float operations of lut_codes_scalar, 16 at a time.
BEBERT_AVX512 inline __m128i codes16(const float* x, int valid, const RowQuant& q) {
  const __mmask16 m = first_n16(valid);
  const __m512 xv = _mm512_maskz_loadu_ps(m, x);
  if (q.mode == ActMode::kSign) {
    const __mmask16 neg = _mm512_cmp_ps_mask(xv, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm_maskz_mov_epi8(m, _mm_mask_blend_epi8(neg, _mm_set1_epi8(1), _mm_set1_epi8(-1)));
  }
  __m512 f = _mm512_div_ps(_mm512_sub_ps(xv, _mm512_set1_ps(q.offset)), _mm512_set1_ps(q.step));
  f = _mm512_roundscale_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(static_cast<float>(q.qn))), _mm512_set1_ps(static_cast<float>(q.qp)));
  const __m512i v = _mm512_sub_epi32(_mm512_cvtps_epi32(f), _mm512_set1_epi32(q.qn + (1 << (q.B - 1))));
  return _mm_maskz_mov_epi8(m, _mm512_cvtepi32_epi8(v));
}

}  // namespace

// tables[q][g][i] = sum_r v_(16q + 4g + r) * (bit r of i ? -1 : +1): per quad, vpermb broadcasts code 4g + r of
// the 16 codes to the 16 bytes of group g, and a masked subtract applies the sign pattern of bit r.
BEBERT_AVX512 void lut_row_tables_avx512(const float* x, int K, const RowQuant& q, int8_t* tables) {
  const int Q = row_bytes(K) / 2;
  // Constants in registers (this runs once per token and quantizer, so no per-call setup loops): byte b of
  // idx[r] is 4 * (b / 16) + r, the code that group b / 16 takes for its bit r; neg[r] marks the table indices
  // b % 16 whose bit r is set (that weight is -1). Patterns: 0xAAAA, 0xCCCC, 0xF0F0, 0xFF00 per 16 entries.
  const __m512i group_base = _mm512_set_epi32(0x0C0C0C0C, 0x0C0C0C0C, 0x0C0C0C0C, 0x0C0C0C0C, 0x08080808, 0x08080808,
                                              0x08080808, 0x08080808, 0x04040404, 0x04040404, 0x04040404, 0x04040404,
                                              0, 0, 0, 0);
  const __m512i idx[4] = {group_base, _mm512_add_epi8(group_base, _mm512_set1_epi8(1)),
                          _mm512_add_epi8(group_base, _mm512_set1_epi8(2)), _mm512_add_epi8(group_base, _mm512_set1_epi8(3))};
  const __mmask64 neg[4] = {0xAAAAAAAAAAAAAAAAull, 0xCCCCCCCCCCCCCCCCull, 0xF0F0F0F0F0F0F0F0ull, 0xFF00FF00FF00FF00ull};
  for (int qd = 0; qd < Q; ++qd) {
    const int k0 = 16 * qd;
    const __m128i v = k0 < K ? codes16(x + k0, K - k0, q) : _mm_setzero_si128();
    const __m512i src = _mm512_broadcast_i32x4(v);
    // four independent signed terms, then an add tree (a chain of adds made this latency-bound)
    __m512i e[4];
    const __m512i zero = _mm512_setzero_si512();
    for (int r = 0; r < 4; ++r) {
      const __m512i v = _mm512_permutexvar_epi8(idx[r], src);
      e[r] = _mm512_mask_sub_epi8(v, neg[r], zero, v);
    }
    _mm512_storeu_si512(tables + 64 * qd, _mm512_add_epi8(_mm512_add_epi8(e[0], e[1]), _mm512_add_epi8(e[2], e[3])));
  }
}

namespace {

// Epilogue of one 16-row group for one token: val as in LutPart, y = alpha * val (+ previous halves) (+ bias).
BEBERT_AVX512 inline __m512 part_value(const LutPart& p, __m512i acc, int n, __mmask16 m) {
  const __m512 alpha = _mm512_maskz_loadu_ps(m, p.alpha + n);
  if (p.sign) return _mm512_mul_ps(alpha, _mm512_cvtepi32_ps(acc));
  // Symmetric quantizers have c = 0 and offset = 0: then offset * rowsum is +-0 and adding it changes nothing
  // (step * float(qdot) is never -0 for step > 0), so the shorter form gives the same floats.
  if (p.c == 0 && p.offset == 0.0f) return _mm512_mul_ps(alpha, _mm512_mul_ps(_mm512_set1_ps(p.step), _mm512_cvtepi32_ps(acc)));
  const __m512i rs = _mm512_loadu_si512(p.rowsum + n);  // padded to a multiple of 64 rows
  const __m512i qdot = _mm512_add_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(p.c), rs));
  const __m512 val = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(p.step), _mm512_cvtepi32_ps(qdot)),
                                   _mm512_mul_ps(_mm512_set1_ps(p.offset), _mm512_cvtepi32_ps(rs)));
  return _mm512_mul_ps(alpha, val);
}

// acc[t][z] over all Q quads: token t's tables at tab[t] (64 bytes per quad), weight vector z at w[z] (the 4
// vectors of a quad are 256 bytes apart from the next quad's).
template <int MT, int Z>
BEBERT_AVX512 inline void lut_accumulate(const int8_t* const* tab, const uint8_t* const* w, int Q, __m512i (&acc)[MT][Z]) {
  const __m512i ones = _mm512_set1_epi8(1);
  for (int t = 0; t < MT; ++t)
    for (int z = 0; z < Z; ++z) acc[t][z] = _mm512_setzero_si512();
  for (int q = 0; q < Q; ++q) {
    __m512i wv[Z];
    for (int z = 0; z < Z; ++z) wv[z] = _mm512_loadu_si512(w[z] + static_cast<size_t>(q) * 256);
    for (int t = 0; t < MT; ++t) {
      const __m512i tb = _mm512_loadu_si512(tab[t] + static_cast<size_t>(q) * 64);
      for (int z = 0; z < Z; ++z) acc[t][z] = _mm512_dpbusd_epi32(acc[t][z], ones, _mm512_permutexvar_epi8(wv[z], tb));
    }
  }
}

// One 64-row tile for tokens [t0, t0 + MT) of part s. mode 0: y = part; mode 1: y = y + part (the second TWS
// half); the bias is added when `bias` is non-null. (A variant holding both halves' accumulators at once, Z = 8
// over one table load, ran 10-20% slower here than two passes over the same, already built, tables.)
template <int MT>
BEBERT_AVX512 void lut_tile(const LutPart* parts, int s, int Q, size_t tstride, int t0, int tile, int N, int n1,
                            int mode, const float* bias, float* y) {
  constexpr int Z = 4;
  const int8_t* tab[MT];
  for (int t = 0; t < MT; ++t) tab[t] = parts[s].tables + (t0 + t) * tstride;
  const uint8_t* w[Z];
  for (int z = 0; z < Z; ++z) w[z] = parts[s].wt + static_cast<size_t>(tile) * Q * 256 + 64 * z;
  __m512i acc[MT][Z];
  lut_accumulate<MT, Z>(tab, w, Q, acc);
  // No early exit in these loops: with a `break` GCC 12 kept the accumulator array on the stack (an indexed
  // access it could not unroll), storing it back on every step of the loop above.
  for (int j = 0; j < Z; ++j) {
    const int n = tile * 64 + 16 * j;
    const __mmask16 m = first_n16(n1 - n);  // empty past n1: masked loads and stores touch nothing
    const __m512 b = bias ? _mm512_maskz_loadu_ps(m, bias + n) : _mm512_setzero_ps();
    for (int t = 0; t < MT; ++t) {
      float* yr = y + static_cast<size_t>(t0 + t) * N + n;
      __m512 v = part_value(parts[s], acc[t][j], n, m);
      if (mode == 1) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, yr), v);
      if (bias) v = _mm512_add_ps(v, b);
      _mm512_mask_storeu_ps(yr, m, v);
    }
  }
}

template <int MT>
BEBERT_AVX512 void lut_tiles(const LutPart* parts, int s, int Q, int mc, int N, int n0, int n1, int mode,
                             const float* bias, float* y) {
  const size_t tstride = static_cast<size_t>(Q) * 64;
  for (int tile = n0 / 64; tile * 64 < n1; ++tile) {
    int t0 = 0;
    for (; t0 + MT <= mc; t0 += MT) lut_tile<MT>(parts, s, Q, tstride, t0, tile, N, n1, mode, bias, y);
    for (; t0 < mc; ++t0) lut_tile<1>(parts, s, Q, tstride, t0, tile, N, n1, mode, bias, y);
  }
}

}  // namespace

BEBERT_AVX512 void lut_gemm_avx512(const LutPart* parts, int S, int mc, int N, int RB, int n0, int n1,
                                   const float* bias, float* y) {
  // Parts in order (y = part 0, then y += part 1, then the bias: the order of the shared epilogue). Halves with
  // one quantizer arrive with one tables pointer: built once, read twice.
  const int Q = RB / 2;
  if (S == 2) {
    lut_tiles<4>(parts, 0, Q, mc, N, n0, n1, 0, nullptr, y);
    lut_tiles<4>(parts, 1, Q, mc, N, n0, n1, 1, bias, y);
  } else {
    lut_tiles<4>(parts, 0, Q, mc, N, n0, n1, 0, bias, y);
  }
}

// --- sign activations: VPOPCNTQ with 8 rows per vector -------------------------------------------------------
namespace {

template <int MT, int ZB>
BEBERT_AVX512 void sign_tile(const Avx512SignPart& p, const uint64_t* planes, int Wd, int t0, int blk, int N, int K,
                             int n1, bool accumulate, const float* bias, float* y) {
  __m512i acc[MT][ZB];
  for (int t = 0; t < MT; ++t)
    for (int z = 0; z < ZB; ++z) acc[t][z] = _mm512_setzero_si512();
  const uint64_t* wb = p.wt + static_cast<size_t>(blk) * Wd * 8;
  for (int i = 0; i < Wd; ++i) {
    __m512i wv[ZB];
    for (int z = 0; z < ZB; ++z) wv[z] = _mm512_loadu_si512(wb + (static_cast<size_t>(z) * Wd + i) * 8);
    for (int t = 0; t < MT; ++t) {
      const __m512i a = _mm512_set1_epi64(static_cast<long long>(planes[static_cast<size_t>(t0 + t) * Wd + i]));
      for (int z = 0; z < ZB; ++z) acc[t][z] = _mm512_add_epi64(acc[t][z], _mm512_popcnt_epi64(_mm512_xor_si512(a, wv[z])));
    }
  }
  const __m256i kk = _mm256_set1_epi32(K);
  for (int z = 0; z < ZB; ++z) {
    const int n = (blk + z) * 8;  // (no early exit: see lut_tile; past n1 the mask is empty)
    const __mmask8 m = static_cast<__mmask8>(n1 - n >= 8 ? 0xFF : n1 <= n ? 0 : (1u << (n1 - n)) - 1u);
    const __m256 alpha = _mm256_maskz_loadu_ps(m, p.alpha + n);
    for (int t = 0; t < MT; ++t) {
      float* yr = y + static_cast<size_t>(t0 + t) * N + n;
      const __m256i dot = _mm256_sub_epi32(kk, _mm256_slli_epi32(_mm512_cvtepi64_epi32(acc[t][z]), 1));
      __m256 v = _mm256_mul_ps(alpha, _mm256_cvtepi32_ps(dot));
      if (accumulate) v = _mm256_add_ps(_mm256_maskz_loadu_ps(m, yr), v);
      if (bias) v = _mm256_add_ps(v, _mm256_maskz_loadu_ps(m, bias + n));
      _mm256_mask_storeu_ps(yr, m, v);
    }
  }
}

template <int MT, int ZB>
BEBERT_AVX512 void sign_rows(const Avx512SignPart& p, const uint64_t* planes, int Wd, int t0, int N, int K, int n0,
                             int n1, bool accumulate, const float* bias, float* y) {
  int blk = n0 / 8;
  const int end = (n1 + 7) / 8;
  for (; blk + ZB <= end; blk += ZB) sign_tile<MT, ZB>(p, planes, Wd, t0, blk, N, K, n1, accumulate, bias, y);
  for (; blk < end; ++blk) sign_tile<MT, 1>(p, planes, Wd, t0, blk, N, K, n1, accumulate, bias, y);
}

}  // namespace

BEBERT_AVX512 void sign_gemm_avx512(const Avx512SignPart* parts, int S, const uint64_t* planes, int mc, int N, int K,
                                    int n0, int n1, const float* bias, float* y) {
  const int Wd = words_per_row(K);
  constexpr int MT = 4, ZB = 6;  // 24 accumulators + 6 weight vectors + 1 broadcast in 32 registers
  for (int s = 0; s < S; ++s) {
    const float* b = s == S - 1 ? bias : nullptr;
    int t0 = 0;
    for (; t0 + MT <= mc; t0 += MT) sign_rows<MT, ZB>(parts[s], planes, Wd, t0, N, K, n0, n1, s > 0, b, y);
    for (; t0 < mc; ++t0) sign_rows<1, ZB>(parts[s], planes, Wd, t0, N, K, n0, n1, s > 0, b, y);
  }
}

// --- popcount path -------------------------------------------------------------------------------------------
namespace {

template <int B, int R, bool XOR>
BEBERT_AVX512 void counts_block512(const CountArgs& c, int n) {
  const int Wd = c.Wd;
  const uint64_t* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = c.w + static_cast<size_t>(n + r) * Wd;
  for (int m = 0; m < c.M; ++m) {
    const uint64_t* pm = c.planes + static_cast<size_t>(m) * B * Wd;
    __m512i acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
    for (int i = 0; i < Wd; i += 8) {
      const __mmask8 km = static_cast<__mmask8>(Wd - i >= 8 ? 0xFF : (1u << (Wd - i)) - 1u);
      __m512i p[B];
      for (int j = 0; j < B; ++j) p[j] = _mm512_maskz_loadu_epi64(km, pm + static_cast<size_t>(j) * Wd + i);
      for (int r = 0; r < R; ++r) {
        const __m512i wv = _mm512_maskz_loadu_epi64(km, wr[r] + i);
        for (int j = 0; j < B; ++j) {
          const __m512i v = XOR ? _mm512_xor_si512(p[j], wv) : _mm512_and_si512(p[j], wv);
          acc[r] = _mm512_add_epi64(acc[r], _mm512_slli_epi64(_mm512_popcnt_epi64(v), j));
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      alignas(64) int64_t lanes[8];  // (GCC 12's _mm512_reduce_add_epi64 trips -Wmaybe-uninitialized)
      _mm512_store_si512(lanes, acc[r]);
      int64_t total = 0;
      for (int i = 0; i < 8; ++i) total += lanes[i];
      c.counts[static_cast<size_t>(m) * c.N + n + r] = static_cast<int32_t>(total);
    }
  }
}

template <int B, bool XOR>
BEBERT_AVX512 void counts_rows512(const CountArgs& c, int n0, int n1) {
  constexpr int R = 4;
  int n = n0;
  for (; n + R <= n1; n += R) counts_block512<B, R, XOR>(c, n);
  for (; n < n1; ++n) counts_block512<B, 1, XOR>(c, n);
}

}  // namespace

BEBERT_AVX512 void counts_avx512(const CountArgs& c, int n0, int n1) {
  if (c.use_xor) {
    if (c.B == 1) return counts_rows512<1, true>(c, n0, n1);
    return counts_scalar(c, n0, n1);
  }
  switch (c.B) {
    case 1: return counts_rows512<1, false>(c, n0, n1);
    case 2: return counts_rows512<2, false>(c, n0, n1);
    case 3: return counts_rows512<3, false>(c, n0, n1);
    case 4: return counts_rows512<4, false>(c, n0, n1);
    case 5: return counts_rows512<5, false>(c, n0, n1);
    case 6: return counts_rows512<6, false>(c, n0, n1);
    case 7: return counts_rows512<7, false>(c, n0, n1);
    case 8: return counts_rows512<8, false>(c, n0, n1);
    default: return counts_scalar(c, n0, n1);
  }
}

}  // namespace bebert

#else  // not x86-64: never dispatched (isa_supported(kAvx512) is false)

namespace bebert {
void lut_row_tables_avx512(const float*, int, const RowQuant&, int8_t*) {}
void lut_gemm_avx512(const LutPart*, int, int, int, int, int, int, const float*, float*) {}
void counts_avx512(const CountArgs& c, int n0, int n1) { counts_scalar(c, n0, n1); }
void sign_gemm_avx512(const Avx512SignPart*, int, const uint64_t*, int, int, int, int, int, const float*, float*) {}
}  // namespace bebert

#endif
