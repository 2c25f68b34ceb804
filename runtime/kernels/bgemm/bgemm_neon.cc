// aarch64 NEON hot loops (Raspberry Pi 3/4/5 and other ARMv8 boards; NEON is part of the base ISA).
// 2..4-bit and sign activations: table lookup (vqtbl1q_s8, lut_dots_neon). Wider integer codes: vcntq_u8
// per-byte popcount of AND/XOR, pairwise-accumulated into u16 lanes with vpadalq_u8 (Larq Compute Engine's UADALP
// idea), reduced once per output. Float mode: +-1 expansion + FMA, as on x86.
// No sdot path: activations are 4-bit codes, and sdot at int8 on +-1 weights unpacked to bytes tops out at the
// int8 GEMM's own rate (16 MAC per instruction); the lookups do 64 MAC per tbl (scripts/mca_kernels.py).
#include <algorithm>
#include <cstddef>
#include <vector>

#include "../core/bitpack.h"
#include "bgemm.h"
#include "lut_prepare.h"

#if defined(__aarch64__)
#include <arm_neon.h>

namespace bebert {
namespace {

template <int B, int R, bool XOR>
void counts_block(const CountArgs& c, int n) {
  const int Wd = c.Wd, V = Wd / 2;  // 128-bit vectors = 2 words
  const uint64_t* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = c.w + static_cast<size_t>(n + r) * Wd;
  for (int m = 0; m < c.M; ++m) {
    const uint64_t* pm = c.planes + static_cast<size_t>(m) * B * Wd;
    uint16x8_t acc[B][R];
    for (int j = 0; j < B; ++j)
      for (int r = 0; r < R; ++r) acc[j][r] = vdupq_n_u16(0);
    for (int v = 0; v < V; ++v) {
      uint8x16_t wv[R];
      for (int r = 0; r < R; ++r) wv[r] = vreinterpretq_u8_u64(vld1q_u64(wr[r] + 2 * v));
      for (int j = 0; j < B; ++j) {
        const uint8x16_t p = vreinterpretq_u8_u64(vld1q_u64(pm + static_cast<size_t>(j) * Wd + 2 * v));
        for (int r = 0; r < R; ++r) {
          const uint8x16_t t = XOR ? veorq_u8(p, wv[r]) : vandq_u8(p, wv[r]);
          acc[j][r] = vpadalq_u8(acc[j][r], vcntq_u8(t));
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      int32_t total = 0;
      for (int j = 0; j < B; ++j) {
        int32_t pc = static_cast<int32_t>(vaddlvq_u16(acc[j][r]));
        for (int i = 2 * V; i < Wd; ++i) {
          const uint64_t p = pm[static_cast<size_t>(j) * Wd + i];
          pc += __builtin_popcountll(XOR ? (p ^ wr[r][i]) : (p & wr[r][i]));
        }
        total += pc << j;
      }
      c.counts[static_cast<size_t>(m) * c.N + n + r] = total;
    }
  }
}

template <int B, bool XOR>
void counts_rows(const CountArgs& c, int n0, int n1) {
  constexpr int R = B <= 2 ? 4 : (B <= 4 ? 2 : 1);
  int n = n0;
  for (; n + R <= n1; n += R) counts_block<B, R, XOR>(c, n);
  for (; n < n1; ++n) counts_block<B, 1, XOR>(c, n);
}

}  // namespace

void counts_neon(const CountArgs& c, int n0, int n1) {
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
  counts_scalar(c, n0, n1);
}

void lut_row_tables_neon(const float* x, int K, const RowQuant& q, int8_t* tables) {
  lut_row_tables_impl(x, K, q, tables, lut_codes_scalar, lut_tables_scalar);
}

namespace {

// Table lookup with vqtbl1q_s8 (T-MAC layout: one 16-entry int8 table per token and group of 4 weights; the
// weight nibbles of 16 rows are the indices). What makes it cheaper than one token at a time
// (cycle estimates: scripts/mca_kernels.py; instruction counts: scripts/arm_count.py --kernels):
//  - T tokens per pass over a weight byte: the weight bytes are loaded and split into nibbles once per T tokens;
//  - table entries obey |entry| <= 32, so three lookups add exactly in int8 (|sum| <= 96; four could reach 128 and
//    wrap) before one widening into int16: per 6 lookups 4 widening adds instead of 6;
//  - the int16 sums go to dots with vector widening stores (the per-lane scalar fold cost about a fifth of the
//    lookups at K = 384).
// Per 16 rows x 1 token x 24 weights (3 weight bytes): 6 table loads, 6 tbl, 4 add, 4 widening adds, plus
// (3 loads, 3 and, 3 shifts) / T. llvm-mca: 27 MAC/cycle (A57 model for the A72) and 50 (Neoverse-N1 for the A76),
// from 20 and 36 one token at a time. Tried and dropped: Vec-LUT's layout (arXiv 2512.06443: tables across 16
// tokens, one plain load per row and group) estimated ~30 / ~52 MAC/cycle but executed no fewer instructions, and
// needs a 16 x 16 byte transpose of the per-token tables the driver builds; 8 tokens per pass spills registers.
constexpr int kTokens = 4;                                   // 4 x 2 accumulators + 6 nibble vectors in registers
constexpr int kTriplesFlush = kLutPairsPerFlush / 3 * 3;     // int16 bound of lut_prepare.h, in whole triples

inline void widen2(int16x8_t* acc, int8x16_t s) {
  acc[0] = vaddw_s8(acc[0], vget_low_s8(s));
  acc[1] = vaddw_high_s8(acc[1], s);
}

// dots of 16 rows (half h of a 32-row block: wb points at byte 16 h of the block's pair 0) against T tokens
// (tables tb[t]); out[t][r] for r < rows.
template <int T>
void lut_half(const int8_t* const* tb, const uint8_t* wb, int RB, int32_t* const* out, int rows) {
  const uint8x16_t low = vdupq_n_u8(0x0f);
  int32x4_t total[T][4];
  for (int p0 = 0; p0 < RB; p0 += kTriplesFlush) {
    const int p1 = std::min(RB, p0 + kTriplesFlush);
    int16x8_t acc[T][2];
    for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = vdupq_n_s16(0);
    int p = p0;
    for (; p + 3 <= p1; p += 3) {
      const uint8_t* w = wb + static_cast<size_t>(p) * 32;
      const uint8x16_t w0 = vld1q_u8(w), w1 = vld1q_u8(w + 32), w2 = vld1q_u8(w + 64);
      const uint8x16_t l0 = vandq_u8(w0, low), h0 = vshrq_n_u8(w0, 4), l1 = vandq_u8(w1, low), h1 = vshrq_n_u8(w1, 4),
                       l2 = vandq_u8(w2, low), h2 = vshrq_n_u8(w2, 4);
      for (int t = 0; t < T; ++t) {
        const int8_t* e = tb[t] + 32 * p;  // tables of groups 2p .. 2p + 5
        const int8x16_t a = vaddq_s8(vaddq_s8(vqtbl1q_s8(vld1q_s8(e), l0), vqtbl1q_s8(vld1q_s8(e + 16), h0)),
                                     vqtbl1q_s8(vld1q_s8(e + 32), l1));
        const int8x16_t b = vaddq_s8(vaddq_s8(vqtbl1q_s8(vld1q_s8(e + 48), h1), vqtbl1q_s8(vld1q_s8(e + 64), l2)),
                                     vqtbl1q_s8(vld1q_s8(e + 80), h2));
        widen2(acc[t], a);
        widen2(acc[t], b);
      }
    }
    for (; p < p1; ++p) {  // RB % 3 pairs left
      const uint8x16_t w0 = vld1q_u8(wb + static_cast<size_t>(p) * 32);
      const uint8x16_t l0 = vandq_u8(w0, low), h0 = vshrq_n_u8(w0, 4);
      for (int t = 0; t < T; ++t) {
        const int8_t* e = tb[t] + 32 * p;
        widen2(acc[t], vaddq_s8(vqtbl1q_s8(vld1q_s8(e), l0), vqtbl1q_s8(vld1q_s8(e + 16), h0)));
      }
    }
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < 2; ++i) {
        const int32x4_t x = vmovl_s16(vget_low_s16(acc[t][i])), y = vmovl_high_s16(acc[t][i]);
        total[t][2 * i] = p0 == 0 ? x : vaddq_s32(total[t][2 * i], x);
        total[t][2 * i + 1] = p0 == 0 ? y : vaddq_s32(total[t][2 * i + 1], y);
      }
  }
  for (int t = 0; t < T; ++t) {
    if (rows == 16) {
      for (int i = 0; i < 4; ++i) vst1q_s32(out[t] + 4 * i, total[t][i]);
    } else {
      int32_t lanes[16];
      for (int i = 0; i < 4; ++i) vst1q_s32(lanes + 4 * i, total[t][i]);
      for (int r = 0; r < rows; ++r) out[t][r] = lanes[r];
    }
  }
}

template <int T>
void lut_tokens(const LutPrep& prep, int32_t* dots, int m, const uint8_t* wb, int r0, int rows) {
  const int G = 2 * prep.RB;
  const int8_t* tb[T];
  int32_t* out[T];
  for (int t = 0; t < T; ++t) {
    tb[t] = prep.tables + static_cast<size_t>(m + t) * G * 16;
    out[t] = dots + static_cast<size_t>(m + t) * prep.N + r0;
  }
  lut_half<T>(tb, wb, prep.RB, out, rows);
}

}  // namespace

void lut_dots_neon(const LutPrep& prep, int32_t* dots, int n0, int n1) {
  const int RB = prep.RB, N = prep.N;
  for (int nb = n0 / 32; nb * 32 < n1; ++nb) {
    const uint8_t* wb = prep.wt + static_cast<size_t>(nb) * RB * 32;
    for (int h = 0; h < 2 && nb * 32 + 16 * h < N; ++h) {
      const int r0 = nb * 32 + 16 * h, rows = std::min(16, N - r0);
      int m = 0;
      for (; m + kTokens <= prep.M; m += kTokens) lut_tokens<kTokens>(prep, dots, m, wb + 16 * h, r0, rows);
      for (; m < prep.M; ++m) lut_tokens<1>(prep, dots, m, wb + 16 * h, r0, rows);
    }
  }
}

void float_dots_neon(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1) {
  constexpr int RB = 4;
  const int rb = row_bytes(K);
  const int K4 = K / 4 * 4;
  thread_local std::vector<float> signs;
  signs.resize(static_cast<size_t>(RB) * K);
  for (int nb = n0; nb < n1; nb += RB) {
    const int rows = std::min(RB, n1 - nb);
    for (int r = 0; r < rows; ++r) expand_signs(w + static_cast<size_t>(nb + r) * rb, K, signs.data() + static_cast<size_t>(r) * K);
    for (int m = 0; m < M; ++m) {
      const float* xr = x + static_cast<size_t>(m) * K;
      float32x4_t acc[RB];
      for (int r = 0; r < RB; ++r) acc[r] = vdupq_n_f32(0.0f);
      for (int k = 0; k < K4; k += 4) {
        const float32x4_t xv = vld1q_f32(xr + k);
        for (int r = 0; r < RB; ++r) acc[r] = vfmaq_f32(acc[r], xv, vld1q_f32(signs.data() + static_cast<size_t>(r) * K + k));
      }
      for (int r = 0; r < rows; ++r) {
        float s = vaddvq_f32(acc[r]);
        for (int k = K4; k < K; ++k) s += xr[k] * signs[static_cast<size_t>(r) * K + k];
        y[static_cast<size_t>(m) * N + nb + r] = s;
      }
    }
  }
}

}  // namespace bebert

#else  // not aarch64: never dispatched

namespace bebert {
void counts_neon(const CountArgs& c, int n0, int n1) { counts_scalar(c, n0, n1); }
void lut_row_tables_neon(const float*, int, const RowQuant&, int8_t*) {}
void lut_dots_neon(const LutPrep&, int32_t*, int, int) {}
void float_dots_neon(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1) {
  float_dots_scalar(x, M, K, w, N, y, n0, n1);
}
}  // namespace bebert

#endif
