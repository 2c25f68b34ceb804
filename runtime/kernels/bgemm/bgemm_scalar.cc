// Portable hot loops (any CPU): 64-bit popcounts and plain float loops. Also the fallback on x86 without AVX2.
#include <algorithm>
#include <cmath>
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

int32_t quantize_row_scalar(const float* x, int K, const RowQuant& q, uint64_t* planes) {
  const int Wd = words_per_row(K);
  if (q.mode == ActMode::kSign) {
    for (int k = 0; k < K; ++k)
      if (x[k] < 0.0f) planes[k >> 6] |= uint64_t{1} << (k & 63);  // bit 1 <=> -1, as for the weights
    return 0;
  }
  int32_t s = 0;
  for (int k = 0; k < K; ++k) {
    // (x - offset) / step, then round-half-even: the same float operations as the PyTorch quantizer.
    float v = std::nearbyint((x[k] - q.offset) / q.step);
    v = std::min(std::max(v, static_cast<float>(q.qn)), static_cast<float>(q.qp));
    const uint32_t u = static_cast<uint32_t>(static_cast<int>(v) - q.qn);
    s += static_cast<int32_t>(u);
    for (int j = 0; j < q.B; ++j)
      if ((u >> j) & 1u) planes[static_cast<size_t>(j) * Wd + (k >> 6)] |= uint64_t{1} << (k & 63);
  }
  return s;
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
