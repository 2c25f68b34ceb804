// Packed-bit weight layout shared by every part of bebert-deploy (see runtime/LAYOUT.md; the Python twin is
// bebert_deploy/runtime/bitpack.py). A binary weight matrix W[N, K] of signs is stored row by row:
//   - bit value 1 means -1, bit value 0 means +1 (Larq Compute Engine's convention: the float sign bit);
//   - element k of a row is bit (k % 8) of byte (k / 8) of that row, least significant bit first, which on a
//     little-endian machine is bit (k % 64) of 64-bit word (k / 64);
//   - each row is padded with zero bits (+1) to a multiple of 64 bits: row stride = words_per_row(K) * 8 bytes;
//   - a TWS-split layer stores its S = 2 halves one after the other: [S, N, row_bytes(K)].
// Scales are float32 [S, N] (a per-tensor scale is repeated over N). Row sums (sum of the +-1 values of a row,
// K - 2 * popcount(row)) are not stored: kernels derive them when a layer is prepared.
#pragma once
#include <cstddef>
#include <cstdint>

namespace bebert {

constexpr int kWordBits = 64;

inline int words_per_row(int k) { return (k + kWordBits - 1) / kWordBits; }
inline int row_bytes(int k) { return words_per_row(k) * 8; }

// Sign of element k in a packed row: +1 or -1.
inline int packed_sign(const uint8_t* row, int k) { return ((row[k >> 3] >> (k & 7)) & 1) ? -1 : 1; }

// Expands a packed row to +-1.0f: out[k] for k < k_count. Whole bytes go through a 256 x 8 table.
inline void expand_signs(const uint8_t* row, int k_count, float* out) {
  struct Table {
    float v[256][8];
    Table() {
      for (int b = 0; b < 256; ++b)
        for (int i = 0; i < 8; ++i) v[b][i] = ((b >> i) & 1) ? -1.0f : 1.0f;
    }
  };
  static const Table table;
  const int full = k_count / 8;
  for (int i = 0; i < full; ++i)
    for (int j = 0; j < 8; ++j) out[8 * i + j] = table.v[row[i]][j];
  for (int k = 8 * full; k < k_count; ++k) out[k] = static_cast<float>(packed_sign(row, k));
}

}  // namespace bebert
