#include <cstdint>
#include <cstring>

#include "targets.h"

namespace bebert {
namespace ops {
namespace {

// A NaN or inf has an all-ones exponent, and exactly then (u & exponent) + 2^23 carries into bit 31: an and, an
// add and an or per element, a loop compilers vectorise.
__attribute__((always_inline)) inline bool scan(const float* p, int64_t n) {
  uint32_t acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, p + i, 4);
    acc |= (u & 0x7F800000u) + 0x00800000u;
  }
  return (acc >> 31) == 0;
}

bool scan_base(const float* p, int64_t n) { return scan(p, n); }
#if defined(__x86_64__)
// The same loop vectorised for AVX2 and AVX-512 (picked once by CPU): it runs over every op input on every call,
// and at the baseline SSE2 width it was a quarter of an AddLayerNorm call.
__attribute__((target("avx2"))) bool scan_avx2(const float* p, int64_t n) { return scan(p, n); }
BEBERT_TARGET_WIDE("avx512f") bool scan_avx512(const float* p, int64_t n) { return scan(p, n); }
#endif

}  // namespace

// (Defined here, not inline in op_checks.h: inlined beside the checks' error paths GCC 12 left the loop scalar,
// ~7% of a member's time.)
bool all_finite(const float* p, int64_t n) {
#if defined(__x86_64__)
  static bool (*const fn)(const float*, int64_t) = __builtin_cpu_supports("avx512f") ? scan_avx512
                                                   : __builtin_cpu_supports("avx2")  ? scan_avx2
                                                                                      : scan_base;
  return fn(p, n);
#else
  return scan_base(p, n);
#endif
}

}  // namespace ops
}  // namespace bebert
