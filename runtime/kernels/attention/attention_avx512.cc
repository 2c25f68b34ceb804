// AVX-512 instance of the quantized attention core (attention_core.h): 16-lane int32 / float vectors for the
// score, softmax and context loops (quant_attention dispatches here only after isa_supported(kAvx512)).
#if defined(__x86_64__)
#include "../core/targets.h"
#define BEBERT_ATTN_TARGET BEBERT_TARGET_WIDE("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")
#define BEBERT_ATTN_NS attn_avx512
#define BEBERT_ATTN_VEC_FLOATS 16
#define BEBERT_ATTN_VNNI 1
// GCC 12's AVX-512 headers build some intrinsics (conversions, masked moves) on a self-initialised `__Y`
// placeholder, which -Wmaybe-uninitialized reports in target-attribute functions: a false positive in the header.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "attention_core.h"

namespace bebert {
void attention_avx512(const AttentionArgs& a) { attn_avx512::run(a); }
}  // namespace bebert
#endif
