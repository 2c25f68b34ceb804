// NEON instance of the quantized attention core (attention_core.h): NEON is part of the aarch64 baseline, so the
// compiler's vectoriser uses it without a target attribute.
#if defined(__aarch64__)
#define BEBERT_ATTN_TARGET
#define BEBERT_ATTN_NS attn_neon
#define BEBERT_ATTN_VEC_FLOATS 4
#define BEBERT_ATTN_NEON 1
#include "attention_core.h"

namespace bebert {
void attention_neon(const AttentionArgs& a) { attn_neon::run(a); }
}  // namespace bebert
#endif
