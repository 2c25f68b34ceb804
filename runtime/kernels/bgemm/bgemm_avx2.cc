// x86-64 AVX2 hot loops, compiled with function-level target attributes so one binary runs on any x86-64
// CPU (bgemm.cc only calls them after __builtin_cpu_supports("avx2")).
//
// Integer modes: bit-serial popcount. AVX2 has no vector popcount, so bytes are counted with the nibble
// table lookup (pshufb, W. Mula), summed in byte lanes for up to 31 steps (31 * 8 < 256) and widened with
// psadbw; R weight rows share each activation-plane load.
// Float mode: a block of 8 weight rows is expanded to +-1.0f once and reused for every activation row (FMA).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>

#include "../core/bitpack.h"
#include "bgemm.h"
#include "lut_prepare.h"

#if defined(__x86_64__)
#include <immintrin.h>

namespace bebert {
namespace {

#define BEBERT_AVX2 __attribute__((target("avx2,fma,popcnt")))


BEBERT_AVX2 inline __m256i popcnt_bytes(__m256i v, __m256i lut, __m256i low) {
  const __m256i lo = _mm256_and_si256(v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

BEBERT_AVX2 inline int64_t hsum64(__m256i v) {
  const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

// Loads words [i, i + 4) of a row of Wd words, zero-filling past the end (rows are zero-padded to whole words,
// not to whole 256-bit vectors).
BEBERT_AVX2 inline __m256i load_words(const uint64_t* row, int i, int Wd) {
  if (i + 4 <= Wd) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i));
  const int left = Wd - i;
  const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(left), _mm256_setr_epi64x(0, 1, 2, 3));
  return _mm256_maskload_epi64(reinterpret_cast<const long long*>(row + i), mask);
}

// Per step (256 bits of K) and weight row: the B plane popcounts c_j (bytes <= 8) are combined in byte lanes
// as t = sum_j 2^j c_j (<= 8 * 15 = 120 for B <= 4, so no overflow) and widened with psadbw into one
// 64-bit-lane accumulator per row: one horizontal sum per output instead of one per plane.
template <int B, int R, bool XOR>
BEBERT_AVX2 void counts_block(const CountArgs& c, int n) {
  static_assert(B >= 1 && B <= 4, "byte-lane plane combination needs B <= 4");
  const int Wd = c.Wd;
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  const uint64_t* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = c.w + static_cast<size_t>(n + r) * Wd;
  for (int m = 0; m < c.M; ++m) {
    const uint64_t* pm = c.planes + static_cast<size_t>(m) * B * Wd;
    __m256i acc[R];
    for (int r = 0; r < R; ++r) acc[r] = zero;
    for (int i = 0; i < Wd; i += 4) {
      __m256i p[B];
      for (int j = 0; j < B; ++j) p[j] = load_words(pm + static_cast<size_t>(j) * Wd, i, Wd);
      for (int r = 0; r < R; ++r) {
        const __m256i wv = load_words(wr[r], i, Wd);
        __m256i t = zero;
        for (int j = B - 1; j >= 0; --j) {
          const __m256i v = XOR ? _mm256_xor_si256(p[j], wv) : _mm256_and_si256(p[j], wv);
          t = _mm256_add_epi8(_mm256_add_epi8(t, t), popcnt_bytes(v, lut, low));
        }
        acc[r] = _mm256_add_epi64(acc[r], _mm256_sad_epu8(t, zero));
      }
    }
    for (int r = 0; r < R; ++r) c.counts[static_cast<size_t>(m) * c.N + n + r] = static_cast<int32_t>(hsum64(acc[r]));
  }
}

template <int B, bool XOR>
BEBERT_AVX2 void counts_rows(const CountArgs& c, int n0, int n1) {
  constexpr int R = 4;  // 4 weight rows share every activation-plane load
  int n = n0;
  for (; n + R <= n1; n += R) counts_block<B, R, XOR>(c, n);
  for (; n < n1; ++n) counts_block<B, 1, XOR>(c, n);
}

}  // namespace

BEBERT_AVX2 void counts_avx2(const CountArgs& c, int n0, int n1) {
  if (c.use_xor) {
    if (c.B == 1) return counts_rows<1, true>(c, n0, n1);
  } else {
    switch (c.B) {
      case 1: return counts_rows<1, false>(c, n0, n1);
      case 2: return counts_rows<2, false>(c, n0, n1);
      case 3: return counts_rows<3, false>(c, n0, n1);
      case 4: return counts_rows<4, false>(c, n0, n1);
      default: break;
    }
  }
  counts_scalar(c, n0, n1);  // 5..8-bit activations: correct, not tuned
}

BEBERT_AVX2 int32_t quantize_row_avx2(const float* x, int K, const RowQuant& q, uint64_t* planes) {
  const int Wd = words_per_row(K);
  const int K32 = K / 32 * 32;
  auto* p32 = reinterpret_cast<uint32_t*>(planes);  // little-endian: 32-bit half-words of the 64-bit words
  if (q.mode == ActMode::kSign) {
    const __m256 zero = _mm256_setzero_ps();
    for (int k = 0; k < K32; k += 32) {
      uint32_t bits = 0;
      for (int i = 0; i < 4; ++i)
        bits |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + k + 8 * i), zero, _CMP_LT_OQ))) << (8 * i);
      p32[k / 32] = bits;
    }
    RowQuant tail = q;
    uint64_t rest[1] = {0};
    if (K32 < K) {
      quantize_row_scalar(x + K32, K - K32, tail, rest);
      planes[K32 >> 6] |= rest[0] << (K32 & 63);
    }
    return 0;
  }
  const __m256 step = _mm256_set1_ps(q.step), off = _mm256_set1_ps(q.offset);
  const __m256 lo = _mm256_set1_ps(static_cast<float>(q.qn)), hi = _mm256_set1_ps(static_cast<float>(q.qp));
  const __m256i qn = _mm256_set1_epi32(q.qn);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i sum = _mm256_setzero_si256();
  for (int k = 0; k < K32; k += 32) {
    __m256i u32[4];
    for (int i = 0; i < 4; ++i) {
      // Same float operations as the scalar path: subtract, divide, round half to even, clamp.
      __m256 v = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x + k + 8 * i), off), step);
      v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
      u32[i] = _mm256_sub_epi32(_mm256_cvtps_epi32(v), qn);
      sum = _mm256_add_epi32(sum, u32[i]);
    }
    // 32 codes (0..255) -> 32 bytes in element order.
    const __m256i w16a = _mm256_packus_epi32(u32[0], u32[1]);
    const __m256i w16b = _mm256_packus_epi32(u32[2], u32[3]);
    const __m256i b8 = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w16a, w16b), perm);
    for (int j = 0; j < q.B; ++j) {
      // move bit j of every byte to its top bit, then gather the 32 top bits
      const __m256i sh = _mm256_slli_epi16(b8, 7 - j);
      p32[static_cast<size_t>(j) * Wd * 2 + k / 32] = static_cast<uint32_t>(_mm256_movemask_epi8(sh));
    }
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  int32_t s = 0;
  for (int i = 0; i < 8; ++i) s += lanes[i];
  if (K32 < K) {
    uint64_t rest[8] = {};  // B <= 8 planes of the tail word (no allocation per row)
    s += quantize_row_scalar(x + K32, K - K32, q, rest);
    for (int j = 0; j < q.B; ++j) planes[static_cast<size_t>(j) * Wd + (K32 >> 6)] |= rest[j] << (K32 & 63);
  }
  return s;
}

// --- table lookup (2..4-bit activations; lut_prepare.h): one pshufb looks up 32 rows from 32 nibbles -------
namespace {

// lut_codes_scalar, 8 floats at a time (same operations: subtract, divide, round half to even, clamp).
BEBERT_AVX2 void lut_codes_avx2(const float* x, int K, const RowQuant& q, int8_t* v) {
  if (q.mode == ActMode::kSign) return lut_codes_scalar(x, K, q, v);  // a compare per element: not the hot part
  const __m256 step = _mm256_set1_ps(q.step), off = _mm256_set1_ps(q.offset);
  const __m256 lo = _mm256_set1_ps(static_cast<float>(q.qn)), hi = _mm256_set1_ps(static_cast<float>(q.qp));
  const __m256i shift = _mm256_set1_epi32(q.qn + (1 << (q.B - 1)));
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const int K32 = K / 32 * 32;
  for (int k = 0; k < K32; k += 32) {
    __m256i c[4];
    for (int i = 0; i < 4; ++i) {
      __m256 f = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x + k + 8 * i), off), step);
      f = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), lo), hi);
      c[i] = _mm256_sub_epi32(_mm256_cvtps_epi32(f), shift);
    }
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + k), _mm256_permutevar8x32_epi32(b, perm));
  }
  lut_codes_scalar(x + K32, K - K32, q, v + K32);
}

// The AVX2 tables are offset subset sums, not the signed tables of lut_tables_scalar:
//   U[i] = 32 + sum_{r: bit r of i} v_r,  so  T[i] = sum_r v_r (bit r ? -1 : +1) = P + 64 - 2 U[i]  (P = sum_r v_r).
// U lies in 0..60 for codes in -8..7 (and in a subrange for 2..3-bit and sign codes), so FOUR lookups add exactly
// in unsigned bytes (<= 240) before any widening, where signed tables (|T| <= 32) allow only three; and unsigned
// bytes widen by a plain add of the 16-bit words plus a shifted add of their high bytes (3 instructions instead
// of the 5 that sign extension takes). The dot of a token is C - 2 sum U, C = sum_g (P_g + 64) = sum_g (U_g[15] + 32)
// over the token's 2 * RB groups (lut_token_consts_avx2). Two groups per 256-bit register here.
BEBERT_AVX2 void lut_tables_avx2(const int8_t* v, int G, int8_t* tables) {
  // Constants built once (this runs once per token): idx[r] broadcasts code r of each of the two groups, sel[r]
  // is 0xff where bit r of the table index is set.
  struct Consts {
    alignas(32) int8_t idx[4][32];
    alignas(32) int8_t sel[4][32];
    Consts() {
      for (int r = 0; r < 4; ++r)
        for (int i = 0; i < 32; ++i) {
          idx[r][i] = static_cast<int8_t>((i < 16 ? 0 : 4) + r);
          sel[r][i] = ((i & 15) >> r) & 1 ? -1 : 0;
        }
    }
  };
  static const Consts consts;
  __m256i idx[4], sel[4];
  for (int r = 0; r < 4; ++r) {
    idx[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(consts.idx[r]));
    sel[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(consts.sel[r]));
  }
  const __m256i base = _mm256_set1_epi8(32);
  for (int g = 0; g < G; g += 2) {  // G = 2 * RB is a multiple of 16 (row_bytes pads rows to whole 8-byte words)
    int64_t pair;
    std::memcpy(&pair, v + 4 * g, 8);
    const __m256i src = _mm256_set1_epi64x(pair);
    __m256i t[4];
    for (int r = 0; r < 4; ++r) t[r] = _mm256_and_si256(_mm256_shuffle_epi8(src, idx[r]), sel[r]);
    const __m256i u = _mm256_add_epi8(_mm256_add_epi8(base, _mm256_add_epi8(t[0], t[1])), _mm256_add_epi8(t[2], t[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(tables + 16 * g), u);
  }
}

}  // namespace

BEBERT_AVX2 void lut_row_tables_avx2(const float* x, int K, const RowQuant& q, int8_t* tables) {
  lut_row_tables_impl(x, K, q, tables, lut_codes_avx2, lut_tables_avx2);
}

void lut_token_consts_avx2(const int8_t* tables, int M, int G, int32_t* out) {
  for (int m = 0; m < M; ++m) {
    const int8_t* t = tables + static_cast<size_t>(m) * G * 16;
    int32_t c = 32 * G;
    for (int g = 0; g < G; ++g) c += t[16 * g + 15];
    out[m] = c;
  }
}

namespace {

// Steps of 2 weight bytes (4 lookups, <= 240 per byte) between flushes of the 16-bit accumulators: the low-byte
// sums are recovered modulo 2^16, exact while they stay below 2^16 (256 * 240 = 61440).
constexpr int kStepsPerFlush = 256;

// One 16-entry table in both 128-bit lanes.
BEBERT_AVX2 inline __m256i tab(const int8_t* e) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(e)));
}

// total[t][j] = sum of the looked-up U over all groups, rows 8j..8j+7 of the 32-row block at wb, for MT tokens
// whose tables start at tb[t].
template <int MT>
BEBERT_AVX2 inline void lut_sums(const int8_t* const* tb, const uint8_t* wb, int RB, __m256i (&total)[MT][4]) {
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (int t = 0; t < MT; ++t)
    for (int j = 0; j < 4; ++j) total[t][j] = _mm256_setzero_si256();
  for (int p0 = 0; p0 < RB; p0 += 2 * kStepsPerFlush) {
    const int p1 = std::min(RB, p0 + 2 * kStepsPerFlush);
    // words: the 16-bit words of the byte sums (even row + 256 * odd row, modulo 2^16); odd: the odd rows' sums
    __m256i words[MT], odd[MT];
    for (int t = 0; t < MT; ++t) words[t] = odd[t] = _mm256_setzero_si256();
    for (int p = p0; p < p1; p += 2) {  // 2 weight bytes per step: RB is a multiple of 8 (rows are whole words)
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + static_cast<size_t>(p) * 32));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + static_cast<size_t>(p) * 32 + 32));
      const __m256i l0 = _mm256_and_si256(w0, low), h0 = _mm256_and_si256(_mm256_srli_epi16(w0, 4), low);
      const __m256i l1 = _mm256_and_si256(w1, low), h1 = _mm256_and_si256(_mm256_srli_epi16(w1, 4), low);
      for (int t = 0; t < MT; ++t) {
        const int8_t* e = tb[t] + 32 * p;  // tables of groups 2p .. 2p + 3
        const __m256i a = _mm256_add_epi8(_mm256_shuffle_epi8(tab(e), l0), _mm256_shuffle_epi8(tab(e + 16), h0));
        const __m256i b = _mm256_add_epi8(_mm256_shuffle_epi8(tab(e + 32), l1), _mm256_shuffle_epi8(tab(e + 48), h1));
        const __m256i sum = _mm256_add_epi8(a, b);
        words[t] = _mm256_add_epi16(words[t], sum);
        odd[t] = _mm256_add_epi16(odd[t], _mm256_srli_epi16(sum, 8));
      }
    }
    for (int t = 0; t < MT; ++t) {
      const __m256i even = _mm256_sub_epi16(words[t], _mm256_slli_epi16(odd[t], 8));
      // per 128-bit lane, word j of even / odd is row 2j / 2j + 1 of that lane's 16 rows
      const __m256i lo = _mm256_unpacklo_epi16(even, odd[t]);  // rows 0..7 | 16..23
      const __m256i hi = _mm256_unpackhi_epi16(even, odd[t]);  // rows 8..15 | 24..31
      total[t][0] = _mm256_add_epi32(total[t][0], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(lo)));
      total[t][1] = _mm256_add_epi32(total[t][1], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(hi)));
      total[t][2] = _mm256_add_epi32(total[t][2], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(lo, 1)));
      total[t][3] = _mm256_add_epi32(total[t][3], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(hi, 1)));
    }
  }
}

// Loads / stores 8 floats, masked only when not all 8 are valid (vmaskmovps is slow on AMD cores).
template <bool kFull>
BEBERT_AVX2 inline __m256 load8(const float* p, __m256i mask) {
  return kFull ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
}
template <bool kFull>
BEBERT_AVX2 inline void store8(float* p, __m256i mask, __m256 v) {
  if (kFull) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, mask, v);
}

// The epilogue of 8 rows n.. (mask: the rows < n1) for one token: the value of part p from its dot (as
// part_value of the AVX-512 kernel and the driver's epilogue, the same float operations in the same order).
template <bool kFull>
BEBERT_AVX2 inline __m256 part_value(const LutPart& p, __m256i dot, int n, __m256i mask) {
  const __m256 alpha = load8<kFull>(p.alpha + n, mask);
  if (p.sign) return _mm256_mul_ps(alpha, _mm256_cvtepi32_ps(dot));
  // c = 0 and offset = 0 (symmetric): offset * rowsum is +-0, adding it changes nothing (see the AVX-512 kernel)
  if (p.c == 0 && p.offset == 0.0f) return _mm256_mul_ps(alpha, _mm256_mul_ps(_mm256_set1_ps(p.step), _mm256_cvtepi32_ps(dot)));
  const __m256i rs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.rowsum + n));  // padded to 64 rows
  const __m256i qdot = _mm256_add_epi32(dot, _mm256_mullo_epi32(_mm256_set1_epi32(p.c), rs));
  const __m256 val = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(p.step), _mm256_cvtepi32_ps(qdot)),
                                   _mm256_mul_ps(_mm256_set1_ps(p.offset), _mm256_cvtepi32_ps(rs)));
  return _mm256_mul_ps(alpha, val);
}

template <int MT, bool kFull>
BEBERT_AVX2 inline void block_epilogue(const LutPart& p, const __m256i (&total)[MT][4], int t0, int nb, int N, int n1,
                                       int mode, const float* bias, float* y) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int j = 0; j < 4; ++j) {
    const int n = nb * 32 + 8 * j;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n1 - n), lane);  // empty past n1
    const __m256 b = bias ? load8<kFull>(bias + n, mask) : _mm256_setzero_ps();
    for (int t = 0; t < MT; ++t) {
      float* yr = y + static_cast<size_t>(t0 + t) * N + n;
      const __m256i dot = _mm256_sub_epi32(_mm256_set1_epi32(p.tconst[t0 + t]), _mm256_slli_epi32(total[t][j], 1));
      __m256 v = part_value<kFull>(p, dot, n, mask);
      if (mode == 1) v = _mm256_add_ps(load8<kFull>(yr, mask), v);
      if (bias) v = _mm256_add_ps(v, b);
      store8<kFull>(yr, mask, v);
    }
  }
}

// One 32-row block nb of part p for tokens [t0, t0 + MT): y = part (mode 0) or y + part (mode 1), then + bias.
template <int MT>
BEBERT_AVX2 void lut_block(const LutPart& p, int RB, int t0, int nb, int N, int n1, int mode, const float* bias,
                           float* y) {
  const size_t tstride = static_cast<size_t>(RB) * 32;  // 2 * RB tables of 16 bytes per token
  const int8_t* tb[MT];
  for (int t = 0; t < MT; ++t) tb[t] = p.tables + (t0 + t) * tstride;
  __m256i total[MT][4];
  lut_sums<MT>(tb, p.wt + static_cast<size_t>(nb) * RB * 32, RB, total);
  if (nb * 32 + 32 <= n1) block_epilogue<MT, true>(p, total, t0, nb, N, n1, mode, bias, y);
  else block_epilogue<MT, false>(p, total, t0, nb, N, n1, mode, bias, y);
}

}  // namespace

BEBERT_AVX2 void lut_gemm_avx2(const LutPart* parts, int S, int mc, int N, int RB, int n0, int n1, const float* bias,
                               float* y) {
  // Parts in order (y = part 0, then y += part 1, then the bias: the driver's epilogue order).
  constexpr int kTokens = 3;  // 3 x 2 16-bit accumulators, 4 nibble vectors and the lookups in 16 registers (2 and 4 measured slower)
  for (int s = 0; s < S; ++s) {
    const float* b = s == S - 1 ? bias : nullptr;
    for (int nb = n0 / 32; nb * 32 < n1; ++nb) {
      int t = 0;
      for (; t + kTokens <= mc; t += kTokens) lut_block<kTokens>(parts[s], RB, t, nb, N, n1, s > 0, b, y);
      for (; t < mc; ++t) lut_block<1>(parts[s], RB, t, nb, N, n1, s > 0, b, y);
    }
  }
}

BEBERT_AVX2 void float_dots_avx2(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1) {
  constexpr int RB = 4;
  const int rb = row_bytes(K);
  const int K8 = K / 8 * 8;
  thread_local std::vector<float> signs;
  signs.resize(static_cast<size_t>(RB) * K);
  for (int nb = n0; nb < n1; nb += RB) {
    const int rows = std::min(RB, n1 - nb);
    for (int r = 0; r < rows; ++r) expand_signs(w + static_cast<size_t>(nb + r) * rb, K, signs.data() + static_cast<size_t>(r) * K);
    for (int m = 0; m < M; ++m) {
      const float* xr = x + static_cast<size_t>(m) * K;
      __m256 acc[RB];
      for (int r = 0; r < RB; ++r) acc[r] = _mm256_setzero_ps();
      for (int k = 0; k < K8; k += 8) {
        const __m256 xv = _mm256_loadu_ps(xr + k);
        for (int r = 0; r < RB; ++r)
          acc[r] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(signs.data() + static_cast<size_t>(r) * K + k), acc[r]);
      }
      for (int r = 0; r < rows; ++r) {
        const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
        const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        float s = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
        for (int k = K8; k < K; ++k) s += xr[k] * signs[static_cast<size_t>(r) * K + k];
        y[static_cast<size_t>(m) * N + nb + r] = s;
      }
    }
  }
}

}  // namespace bebert

#else  // not x86-64: never dispatched

namespace bebert {
void counts_avx2(const CountArgs& c, int n0, int n1) { counts_scalar(c, n0, n1); }
int32_t quantize_row_avx2(const float* x, int K, const RowQuant& q, uint64_t* planes) {
  return quantize_row_scalar(x, K, q, planes);
}
void lut_row_tables_avx2(const float*, int, const RowQuant&, int8_t*) {}
void lut_gemm_avx2(const LutPart*, int, int, int, int, int, int, const float*, float*) {}
void lut_token_consts_avx2(const int8_t*, int, int, int32_t*) {}
void float_dots_avx2(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1) {
  float_dots_scalar(x, M, K, w, N, y, n0, n1);
}
}  // namespace bebert

#endif
