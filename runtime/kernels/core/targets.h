// Function-level ISA targets of the kernels' per-ISA instances, so one library runs on any x86-64 CPU and picks
// the instance at run time. BEBERT_TARGET_WIDE(features) asks for 512-bit vectors where the features allow them:
// GCC keeps 256-bit vectors under generic tuning unless told `prefer-vector-width=512`; Clang has no such option.
#pragma once

#if defined(__clang__)
#define BEBERT_TARGET_WIDE(features) __attribute__((target(features)))
#else
#define BEBERT_TARGET_WIDE(features) __attribute__((target(features ",prefer-vector-width=512")))
#endif
