// AVX2 instance of the quantized attention core (attention_core.h), compiled with a function-level target so the
// library still runs on any x86-64 CPU (quant_attention dispatches here only after isa_supported(kAvx2)).
#if defined(__x86_64__)
#define BEBERT_ATTN_TARGET __attribute__((target("avx2,fma")))
#define BEBERT_ATTN_NS attn_avx2
#define BEBERT_ATTN_VEC_FLOATS 8
#define BEBERT_ATTN_AVX2 1
#include "attention_core.h"

namespace bebert {
void attention_avx2(const AttentionArgs& a) { attn_avx2::run(a); }
}  // namespace bebert
#endif
