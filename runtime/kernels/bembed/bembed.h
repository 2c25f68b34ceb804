// Binary word embedding lookup: out[i, :] = sum_s scales[s, id_i] * sign(table[s, id_i, :]) with the table in
// the packed layout of core/bitpack.h ([S, V, row_bytes(D)], one packed row per token), scales float [S, V].
// Shared by the ONNX Runtime op (ort/ort_ops.cc) and the LiteRT op (litert/litert_ops.cc).
#pragma once
#include <cstdint>

namespace bebert {

// ids int64 [n]; out float [n, D]. Returns the number of ids outside [0, V); their rows are set to NaN.
int64_t binary_embedding(const int64_t* ids, int64_t n, const uint8_t* table, int S, int64_t V, int D,
                         const float* scales, float* out);

}  // namespace bebert
