// Preparation of the table-lookup path (2..4-bit and sign activations), shared by the AVX2 and NEON files, which
// inline it into functions compiled for their ISA.
//
// Per token m and group g of 4 weights, T[i] = sum_r v_(4g+r) * (bit r of i ? -1 : +1) for the 16 sign
// patterns i (v = u - 2^(bits-1), |T| <= 32); a weight row's 4 packed sign bits of group g are exactly nibble
// g of the row (runtime/LAYOUT.md), so one byte-shuffle looks up many rows at once. Weights are transposed into
// blocks of 32 rows: wt[block][byte p][row r] = byte p of row 32 * block + r (zero rows pad the last block).
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/bitpack.h"
#include "../core/thread_pool.h"
#include "bgemm.h"

namespace bebert {

// v = clamp(nearbyint((x - offset) / step), qn, qp) - qn - 2^(bits-1) for k < K (the same float operations
// as every other path, so codes stay bit-identical); the caller zero-fills the padding.
// kSign: v = sign(x) in {-1, +1} (sign(0) = +1), so the table dots are the +-1 dot products themselves.
inline void lut_codes_scalar(const float* x, int K, const RowQuant& q, int8_t* v) {
  if (q.mode == ActMode::kSign) {
    for (int k = 0; k < K; ++k) v[k] = x[k] < 0.0f ? -1 : 1;
    return;
  }
  const int centre = 1 << (q.B - 1);
  for (int k = 0; k < K; ++k) {
    float f = std::nearbyint((x[k] - q.offset) / q.step);
    f = std::min(std::max(f, static_cast<float>(q.qn)), static_cast<float>(q.qp));
    v[k] = static_cast<int8_t>(static_cast<int>(f) - q.qn - centre);
  }
}

// tables[g][i] for g < G from codes v[4G]: T[0] = sum v, T[i] = T[i without its lowest set bit r] - 2 v_r.
inline void lut_tables_scalar(const int8_t* v, int G, int8_t* tables) {
  for (int g = 0; g < G; ++g, tables += 16) {
    const int8_t* vg = v + 4 * g;
    tables[0] = static_cast<int8_t>(vg[0] + vg[1] + vg[2] + vg[3]);
    for (int i = 1; i < 16; ++i) tables[i] = static_cast<int8_t>(tables[i & (i - 1)] - 2 * vg[__builtin_ctz(i)]);
  }
}

// Fills prep for M tokens; Codes / Tables are the ISA's versions of lut_codes_scalar / lut_tables_scalar.
template <typename Codes, typename Tables>
inline void lut_prepare_impl(const float* x, int M, int K, const RowQuant& q, const uint8_t* w, int N, LutPrep& prep,
                             int threads, Codes codes, Tables tables) {
  const int RB = row_bytes(K), G = 2 * RB, NB = (N + 31) / 32;
  prep.M = M; prep.N = N; prep.RB = RB;
  prep.tables.resize(static_cast<size_t>(M) * G * 16);  // every entry is written below
  prep.wt.resize(static_cast<size_t>(NB) * RB * 32);
  if (N % 32) std::fill(prep.wt.end() - static_cast<std::ptrdiff_t>(RB) * 32, prep.wt.end(), 0);  // padding rows
  parallel_for(M, threads, [&](int m) {
    std::vector<int8_t> v(static_cast<size_t>(G) * 4, 0);  // positions past K stay zero
    codes(x + static_cast<size_t>(m) * K, K, q, v.data());
    tables(v.data(), G, prep.tables.data() + static_cast<size_t>(m) * G * 16);
  });
  parallel_for(NB, threads, [&](int nb) {
    for (int r = 0; r < 32 && nb * 32 + r < N; ++r) {
      const uint8_t* row = w + static_cast<size_t>(nb * 32 + r) * RB;
      uint8_t* dst = prep.wt.data() + static_cast<size_t>(nb) * RB * 32 + r;
      for (int p = 0; p < RB; ++p) dst[static_cast<size_t>(p) * 32] = row[p];
    }
  });
}

// int16 accumulators: each byte pair adds at most 2 * 32 in magnitude, so 511 pairs cannot overflow.
constexpr int kLutPairsPerFlush = 511;

}  // namespace bebert
