// Portable hot loops (any CPU): 64-bit popcounts and plain float loops. Also the fallback on x86 without AVX2.
#include <cstddef>

#include "../core/bitpack.h"
#include "bgemm.h"

namespace bebert {

void counts_scalar(const CountArgs& c, int n0, int n1) {
  for (int n = n0; n < n1; ++n) {
    const uint64_t* wr = c.w + static_cast<size_t>(n) * c.Wd;
    for (int m = 0; m < c.M; ++m) {
      const uint64_t* pm = c.planes + static_cast<size_t>(m) * c.B * c.Wd;
      int32_t total = 0;
      for (int j = 0; j < c.B; ++j) {
        int32_t pc = 0;
        for (int i = 0; i < c.Wd; ++i) {
          const uint64_t v = c.use_xor ? (pm[j * c.Wd + i] ^ wr[i]) : (pm[j * c.Wd + i] & wr[i]);
          pc += __builtin_popcountll(v);
        }
        total += pc << j;
      }
      c.counts[static_cast<size_t>(m) * c.N + n] = total;
    }
  }
}

void float_dots_scalar(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1) {
  const int rb = row_bytes(K);
  for (int n = n0; n < n1; ++n) {
    const uint8_t* row = w + static_cast<size_t>(n) * rb;
    for (int m = 0; m < M; ++m) {
      const float* xr = x + static_cast<size_t>(m) * K;
      float acc = 0.0f;
      for (int k = 0; k < K; ++k) acc += packed_sign(row, k) < 0 ? -xr[k] : xr[k];
      y[static_cast<size_t>(m) * N + n] = acc;
    }
  }
}

}  // namespace bebert
