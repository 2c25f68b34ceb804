// Residual add + LayerNorm of a BinaryBERT layer, one op instead of Add and LayerNormalization (ONNX) or the ~10
// builtin ops that spell LayerNorm in TFLite (runtime/OPS.md, AddLayerNorm / BebertAddLayerNorm):
//   s = x + residual                                  per row of `cols` values
//   mean = sum(s) / cols, var = sum((s - mean)^2) / cols   (biased, as torch.nn.LayerNorm)
//   y = ((s - mean) * (1 / sqrt(var + eps))) * gamma + beta
// The sums run in 4 x 16 lanes in a fixed order and nothing is contracted (-ffp-contract=off), so the result does not
// depend on the thread count; it equals PyTorch's LayerNorm up to float rounding (summation order). One portable
// source, compiled at the baseline ISA and for AVX2 and AVX-512 (run as best_isa() says, like the other kernels);
// every instance computes the same bits.
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
