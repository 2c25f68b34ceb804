#include "bembed.h"

#include <cmath>
#include <vector>

#include "../core/bitpack.h"

namespace bebert {

int64_t binary_embedding(const int64_t* ids, int64_t n, const uint8_t* table, int S, int64_t V, int D,
                         const float* scales, float* out) {
  const int rb = row_bytes(D);
  // Rows are expanded to +-1 through bitpack.h's byte table, then scaled: a per-bit branch mispredicts on half
  // the bits of a random sign row (it cost ~0.5 ms of a 10 ms member at seq 128). sign * sc is exact.
  thread_local std::vector<float> signs;
  signs.resize(D);
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
      expand_signs(row, D, signs.data());
      for (int d = 0; d < D; ++d) o[d] += signs[d] * sc;
    }
  }
  return bad;
}

}  // namespace bebert
