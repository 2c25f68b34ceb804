#include "bembed.h"

#include <cmath>

#include "../core/bitpack.h"

namespace bebert {

int64_t binary_embedding(const int64_t* ids, int64_t n, const uint8_t* table, int S, int64_t V, int D,
                         const float* scales, float* out) {
  const int rb = row_bytes(D);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    float* o = out + i * D;
    const int64_t id = ids[i];
    if (id < 0 || id >= V) {
      for (int d = 0; d < D; ++d) o[d] = std::nanf("");
      ++bad;
      continue;
    }
    // Sum the parts in order s = 0, 1, ... starting from 0, as the PyTorch model does.
    for (int d = 0; d < D; ++d) o[d] = 0.0f;
    for (int s = 0; s < S; ++s) {
      const uint8_t* row = table + (static_cast<size_t>(s) * V + id) * rb;
      const float sc = scales[s * V + id];
      for (int d = 0; d < D; ++d) o[d] += packed_sign(row, d) < 0 ? -sc : sc;
    }
  }
  return bad;
}

}  // namespace bebert
