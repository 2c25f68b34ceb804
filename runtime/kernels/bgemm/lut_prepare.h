// Preparation of the table-lookup path (2..4-bit and sign activations), shared by the AVX2 and NEON files, which
// inline it into functions compiled for their ISA, and by the driver (weight arrangement, done once per buffer).
//
// Per token m and group g of 4 weights, T[i] = sum_r v_(4g+r) * (bit r of i ? -1 : +1) for the 16 sign
// patterns i (v = u - 2^(bits-1), |T| <= 32); a weight row's 4 packed sign bits of group g are exactly nibble
// g of the row (runtime/LAYOUT.md), so one byte-shuffle looks up many rows at once. Weights are transposed into
// blocks of 32 rows: wt[block][byte p][row r] = byte p of row 32 * block + r (zero rows pad the last block).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../core/bitpack.h"
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

// Codes and tables of one token row into tables[2 * RB][16]; Codes / Tables are the ISA's versions of
// lut_codes_scalar / lut_tables_scalar. The codes go through a per-thread scratch row that only ever grows, so a
// call allocates nothing once the largest K has been seen.
template <typename Codes, typename Tables>
inline void lut_row_tables_impl(const float* x, int K, const RowQuant& q, int8_t* tables, Codes codes, Tables build) {
  const int G = 2 * row_bytes(K);
  thread_local std::vector<int8_t> v;
  if (v.size() < static_cast<size_t>(G) * 4) v.resize(static_cast<size_t>(G) * 4);
  std::fill(v.begin() + K, v.begin() + static_cast<std::ptrdiff_t>(G) * 4, 0);  // positions past K stay zero
  codes(x, K, q, v.data());
  build(v.data(), G, tables);
}

// Arranges W [N, RB] for the 32-row lookups of lut_dots_<isa>: wt[block][byte p][row r] = byte p of row
// 32 * block + r, zero rows padding the last block. Runs once per weight buffer (the driver caches the result).
inline void lut_arrange_rows32(const uint8_t* w, int N, int RB, uint8_t* wt) {
  const int NB = (N + 31) / 32;
  std::fill(wt, wt + static_cast<size_t>(NB) * RB * 32, 0);
  for (int n = 0; n < N; ++n) {
    const uint8_t* row = w + static_cast<size_t>(n) * RB;
    uint8_t* dst = wt + static_cast<size_t>(n / 32) * RB * 32 + (n % 32);
    for (int p = 0; p < RB; ++p) dst[static_cast<size_t>(p) * 32] = row[p];
  }
}

// Arranges W [N, RB] for the AVX-512 kernel (bgemm.h, lut_gemm_avx512): tiles of 64 rows, per quad q of 16 weights
// (4 groups) four 64-byte vectors j = 0..3; byte 4 * r + g of vector j = (g << 4) | nibble (4 q + g) of row
// 64 * tile + 16 * j + r. Padding rows are zero. Size: ceil(N / 64) * (RB / 2) * 256 bytes = 2 bits per weight.
inline void lut_arrange_quads64(const uint8_t* w, int N, int RB, uint8_t* wt) {
  const int NT = (N + 63) / 64, Q = RB / 2;
  std::fill(wt, wt + static_cast<size_t>(NT) * Q * 256, 0);
  for (int n = 0; n < N; ++n) {
    const uint8_t* row = w + static_cast<size_t>(n) * RB;
    const int tile = n / 64, j = (n % 64) / 16, r = n % 16;
    for (int q = 0; q < Q; ++q) {
      uint8_t* dst = wt + ((static_cast<size_t>(tile) * Q + q) * 4 + j) * 64 + 4 * r;
      for (int g = 0; g < 4; ++g) {
        const int gg = 4 * q + g;
        dst[g] = static_cast<uint8_t>((g << 4) | ((row[gg >> 1] >> (4 * (gg & 1))) & 15));
      }
    }
  }
}

// Arranges W [N, Wd words] for sign_gemm_avx512: wt[block][i][r] = word i of row 8 * block + r (zero rows pad the
// last block of 8). Same size as the packed weights.
inline void lut_arrange_words8(const uint8_t* w, int N, int Wd, uint64_t* wt) {
  const int NB = (N + 7) / 8;
  std::fill(wt, wt + static_cast<size_t>(NB) * Wd * 8, 0);
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < Wd; ++i)
      std::memcpy(wt + (static_cast<size_t>(n / 8) * Wd + i) * 8 + n % 8, w + (static_cast<size_t>(n) * Wd + i) * 8, 8);
}

// int16 accumulators: each byte pair adds at most 2 * 32 in magnitude, so 511 pairs cannot overflow.
constexpr int kLutPairsPerFlush = 511;

}  // namespace bebert
