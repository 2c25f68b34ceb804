// Quantized self-attention core of a BinaryBERT layer, one op instead of ~30 graph nodes (runtime/OPS.md,
// QuantAttention / BebertQuantAttention):
//   qc = clamp(nearbyint(q / step_q), qn, qp)   (likewise k, v: the symmetric b-bit LSQ codes; qn = -2^(b-1))
//   scores[h, i, j] = float(sum_d qc[i, h, d] * kc[j, h, d]) * ((step_q * step_k) / sqrt(D)) + mask_add[j]
//   p = softmax_j(scores)                         (exp: exp_vec, ~1 ulp; times 1 / the row sum)
//   pmin = min of p over every head, row and column of the example (the asymmetric LSQ quantizer's minimum)
//   u = clamp(nearbyint((p - pmin) / step_p), 0, 2^b - 1)
//   out[i, h * D + e] = (float(sum_j u_j * vc[j, h, e]) * step_p + pmin * float(sum_j vc[j, h, e])) * step_v
// which is the PyTorch layer's fake-quant chain (models/bert.py) computed with integer dot products: equal up to
// float rounding (a probability on an LSQ rounding boundary can move one level, as between thread counts).
// Every ISA path runs the same source (attention_core.h) with a fixed order of float operations (partial sums in
// 16 lanes, no contraction), so scalar, AVX2, AVX-512 and NEON outputs are bit-identical.
#pragma once
#include <string>

#include "../bgemm/bgemm.h"  // Isa

namespace bebert {

struct AttentionArgs {
  int B = 0, L = 0, heads = 0, head_dim = 0;
  const float* q = nullptr;         // [B, L, heads * head_dim] (the query projection, before its quantizer)
  const float* k = nullptr;         // [B, L, heads * head_dim]
  const float* v = nullptr;         // [B, L, heads * head_dim]
  int in_stride = 0;                // row stride of q, k, v in floats; 0 = heads * head_dim. Q, K and V as column
                                    // ranges of one [B, L, 3 H] tensor (one GEMM made them): 3 H, k = q + H, v = q + 2 H
  const float* mask_add = nullptr;  // [B, L]: 0 for tokens, a large negative value for padding
  float step_q = 1, step_k = 1, step_v = 1, step_p = 1;
  int bits = 4;                     // 2..8: q/k/v symmetric, probabilities asymmetric
  float* out = nullptr;             // [B, L, heads * head_dim]
  int threads = 1;
};

// Returns an empty string on success, else a one-line description of the invalid argument.
std::string validate_attention(const AttentionArgs& a);
// Runs on the requested ISA (kAuto = best_isa()). Arguments must pass validate_attention().
void quant_attention(const AttentionArgs& a, Isa isa = Isa::kAuto);

// --- internal: one instance of attention_core.h per ISA (attention_<isa>.cc) ---------------------------------
void attention_scalar(const AttentionArgs& a);
void attention_avx2(const AttentionArgs& a);
void attention_avx512(const AttentionArgs& a);
void attention_neon(const AttentionArgs& a);

}  // namespace bebert
