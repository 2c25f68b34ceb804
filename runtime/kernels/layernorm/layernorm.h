// Residual add + LayerNorm of a BinaryBERT layer, one op instead of Add and LayerNormalization (ONNX) or the ~10
// builtin ops that spell LayerNorm in TFLite (runtime/OPS.md, AddLayerNorm / BebertAddLayerNorm):
//   s = x + residual                                  per row of `cols` values
//   mean = sum(s) / cols, var = sum((s - mean)^2) / cols   (biased, as torch.nn.LayerNorm)
//   y = ((s - mean) * (1 / sqrt(var + eps))) * gamma + beta
// The sums run in 16 lanes in a fixed order and nothing is contracted (-ffp-contract=off), so the result does not
// depend on the thread count; it equals PyTorch's LayerNorm up to float rounding (summation order). One portable
// implementation for every CPU (the compiler vectorises it at the baseline ISA): the op is a few passes over
// rows that stay in L1, small beside the GEMMs around it.
#pragma once

namespace bebert {

struct LayerNormArgs {
  int rows = 0, cols = 0;
  const float* x = nullptr;         // [rows, cols]
  const float* residual = nullptr;  // [rows, cols]
  const float* gamma = nullptr;     // [cols]
  const float* beta = nullptr;      // [cols]
  float eps = 1e-12f;               // > 0
  float* y = nullptr;               // [rows, cols]; may alias x or residual
  int threads = 1;
};

void add_layer_norm(const LayerNormArgs& a);

}  // namespace bebert
