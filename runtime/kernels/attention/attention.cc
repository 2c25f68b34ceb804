// Dispatch and the portable (scalar) instance of the quantized attention core (attention.h).
#if defined(__GNUC__) && !defined(__clang__)
#define BEBERT_ATTN_TARGET __attribute__((optimize("no-tree-vectorize")))  // the reference path stays scalar
#else
#define BEBERT_ATTN_TARGET
#endif
#define BEBERT_ATTN_NS attn_scalar
#include "attention_core.h"
#undef BEBERT_ATTN_TARGET
#undef BEBERT_ATTN_NS

#include <cmath>
#include <string>

namespace bebert {

std::string validate_attention(const AttentionArgs& a) {
  if (a.B < 1 || a.L < 1 || a.heads < 1 || a.head_dim < 1) return "B, L, heads and head_dim must be positive";
  if (a.L > 8192 || a.head_dim > 4096) return "L must be <= 8192 and head_dim <= 4096";
  if (a.bits < 2 || a.bits > 8) return "bits must be in 2..8, got " + std::to_string(a.bits);
  for (float s : {a.step_q, a.step_k, a.step_v, a.step_p})
    if (!(s > 0.0f) || !(s <= 1e6f)) return "activation steps must be in (0, 1e6]";
  if (!a.q || !a.k || !a.v || !a.mask_add || !a.out) return "null input or output pointer";
  if (a.threads < 1) return "threads must be >= 1";
  if (a.in_stride != 0 && a.in_stride < a.heads * a.head_dim) return "in_stride must be 0 or >= heads * head_dim";
  return "";
}

void attention_scalar(const AttentionArgs& a) { attn_scalar::run(a); }

void quant_attention(const AttentionArgs& a, Isa isa) {
  if (isa == Isa::kAuto || !isa_supported(isa)) isa = best_isa();
  switch (isa) {
#if defined(__x86_64__)
    case Isa::kAvx512: return attention_avx512(a);
    case Isa::kAvx2: return attention_avx2(a);
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return attention_neon(a);
#endif
    default: return attention_scalar(a);
  }
}

}  // namespace bebert
