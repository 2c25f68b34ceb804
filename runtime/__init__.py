"""Runtime: packed-bit kernels, custom-op libraries, sessions and benchmarks (no torch needed)."""
