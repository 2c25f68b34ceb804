// aarch64 NEON hot loops (Raspberry Pi 3/4/5 and other ARMv8 boards; NEON is part of the base ISA).
// Integer modes: vcntq_u8 per-byte popcount of AND/XOR, pairwise-accumulated into u16 lanes with vpadalq_u8
// (Larq Compute Engine's UADALP idea), reduced once per output. Float mode: +-1 expansion + FMA, as on x86.
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

// Table lookup with vqtbl1q_s8: 16 rows per lookup, two halves of a 32-row block.
void lut_dots_neon(const LutPrep& prep, int32_t* dots, int n0, int n1) {
  const int RB = prep.RB, G = 2 * RB, N = prep.N;
  const uint8x16_t low = vdupq_n_u8(0x0f);
  for (int nb = n0 / 32; nb * 32 < n1; ++nb) {
    const uint8_t* wb = prep.wt + static_cast<size_t>(nb) * RB * 32;
    const int rows = std::min(32, N - nb * 32);
    for (int m = 0; m < prep.M; ++m) {
      const int8_t* tb = prep.tables + static_cast<size_t>(m) * G * 16;
      int32_t total[32] = {};
      for (int p0 = 0; p0 < RB; p0 += kLutPairsPerFlush) {
        const int p1 = std::min(RB, p0 + kLutPairsPerFlush);
        int16x8_t acc[4] = {vdupq_n_s16(0), vdupq_n_s16(0), vdupq_n_s16(0), vdupq_n_s16(0)};
        for (int p = p0; p < p1; ++p) {
          const int8x16_t t0 = vld1q_s8(tb + 32 * p), t1 = vld1q_s8(tb + 32 * p + 16);
          for (int h = 0; h < 2; ++h) {
            const uint8x16_t wv = vld1q_u8(wb + static_cast<size_t>(p) * 32 + 16 * h);
            const int8x16_t s = vaddq_s8(vqtbl1q_s8(t0, vandq_u8(wv, low)), vqtbl1q_s8(t1, vshrq_n_u8(wv, 4)));
            acc[2 * h] = vaddw_s8(acc[2 * h], vget_low_s8(s));
            acc[2 * h + 1] = vaddw_high_s8(acc[2 * h + 1], s);
          }
        }
        for (int i = 0; i < 4; ++i) {
          int16_t lanes[8];
          vst1q_s16(lanes, acc[i]);
          for (int r = 0; r < 8; ++r) total[8 * i + r] += lanes[r];
        }
      }
      for (int r = 0; r < rows; ++r) dots[static_cast<size_t>(m) * N + nb * 32 + r] = total[r];
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
