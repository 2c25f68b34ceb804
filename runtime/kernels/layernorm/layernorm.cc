#include "layernorm.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../bgemm/bgemm.h"  // best_isa
#include "../core/targets.h"
#include "../core/thread_pool.h"

namespace bebert {
namespace {

constexpr int kLanes = 16;
// 16 float lanes as one GCC / Clang vector (one zmm, two ymm or four xmm, as the function's target allows): the
// lane structure, and so the order of every float operation, is the same on every target.
typedef float Lanes16 __attribute__((vector_size(64)));

// (Vectors pass by reference: by value, a 64-byte vector changes the calling convention between targets.)
__attribute__((always_inline)) inline void load16(Lanes16& v, const float* p) { std::memcpy(&v, p, sizeof v); }

// Sums run in 4 x 16 lanes (4 independent vector chains: one chain was bound by the add latency, ~3x slower):
// block q of each 64 values goes to accumulator q, a last partial 16-block and the scalar tail to accumulator 0;
// then (acc0 + acc1) + (acc2 + acc3) and a pairwise tree over the 16 lanes.
struct Acc {
  Lanes16 v[4] = {};
  __attribute__((always_inline)) float fold() const {
    Lanes16 lane = (v[0] + v[1]) + (v[2] + v[3]);
    for (int w = kLanes / 2; w >= 1; w /= 2)
      for (int t = 0; t < w; ++t) lane[t] += lane[t + w];
    return lane[0];
  }
};

// One row: s = x + residual (into y), mean = sum(s) / n, d = s - mean (into y), var = sum(d * d) / n,
// y = (d * inv) * gamma + beta with inv = 1 / sqrt(var + eps).
__attribute__((always_inline)) inline void row(const LayerNormArgs& a, int r) {
  const int n = a.cols;
  const size_t off = static_cast<size_t>(r) * n;
  const float* x = a.x + off;
  const float* res = a.residual + off;
  float* y = a.y + off;  // may alias x or residual: each element is read before it is written
  Acc sum, sq;
  int j = 0;
  for (; j + 4 * kLanes <= n; j += 4 * kLanes)
    for (int q = 0; q < 4; ++q) {
      Lanes16 u, v;
      load16(u, x + j + q * kLanes);
      load16(v, res + j + q * kLanes);
      v += u;
      std::memcpy(y + j + q * kLanes, &v, sizeof v);
      sum.v[q] += v;
    }
  for (; j + kLanes <= n; j += kLanes) {
    Lanes16 u, v;
    load16(u, x + j);
    load16(v, res + j);
    v += u;
    std::memcpy(y + j, &v, sizeof v);
    sum.v[0] += v;
  }
  for (int t = 0; j + t < n; ++t) {
    y[j + t] = x[j + t] + res[j + t];
    sum.v[0][t] += y[j + t];
  }
  const float mean = sum.fold() / static_cast<float>(n);
  j = 0;
  for (; j + 4 * kLanes <= n; j += 4 * kLanes)
    for (int q = 0; q < 4; ++q) {
      Lanes16 d;
      load16(d, y + j + q * kLanes);
      d -= mean;
      std::memcpy(y + j + q * kLanes, &d, sizeof d);
      sq.v[q] += d * d;
    }
  for (; j + kLanes <= n; j += kLanes) {
    Lanes16 d;
    load16(d, y + j);
    d -= mean;
    std::memcpy(y + j, &d, sizeof d);
    sq.v[0] += d * d;
  }
  for (int t = 0; j + t < n; ++t) {
    y[j + t] = y[j + t] - mean;
    sq.v[0][t] += y[j + t] * y[j + t];
  }
  const float inv = 1.0f / std::sqrt(sq.fold() / static_cast<float>(n) + a.eps);
  const float* gamma = a.gamma;
  const float* beta = a.beta;
  const int nb = n / kLanes * kLanes;
  for (j = 0; j < nb; j += kLanes) {
    Lanes16 v, g, b;
    load16(v, y + j);
    load16(g, gamma + j);
    load16(b, beta + j);
    v = (v * inv) * g + b;
    std::memcpy(y + j, &v, sizeof v);
  }
  for (; j < n; ++j) y[j] = (y[j] * inv) * gamma[j] + beta[j];
}

void rows_base(const LayerNormArgs& a, int r0, int r1) {
  for (int r = r0; r < r1; ++r) row(a, r);
}
#if defined(__x86_64__)
// The same rows vectorised for AVX2 and AVX-512 (the baseline SSE2 loop ran ~1 ns per element). The lanes and the
// order of every float operation are the same in each, so they compute the same bits.
__attribute__((target("avx2"))) void rows_avx2(const LayerNormArgs& a, int r0, int r1) {
  for (int r = r0; r < r1; ++r) row(a, r);
}
BEBERT_TARGET_WIDE("avx512f") void rows_avx512(const LayerNormArgs& a, int r0, int r1) {
  for (int r = r0; r < r1; ++r) row(a, r);
}
#endif

// The ISA the other kernels run (best_isa: $BEBERT_ISA when set, so tests reach every path this CPU has).
void rows(const LayerNormArgs& a, int r0, int r1, Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::kAvx512) return rows_avx512(a, r0, r1);
  if (isa == Isa::kAvx2) return rows_avx2(a, r0, r1);
#endif
  (void)isa;
  rows_base(a, r0, r1);
}

}  // namespace

void add_layer_norm(const LayerNormArgs& a) {
  // Rows in parallel only when there is enough work to pay for a fork/join (a [128, 384] call is ~10 us).
  const long work = static_cast<long>(a.rows) * a.cols;
  const int threads = work >= 65536 ? std::max(1, a.threads) : 1;
  const int chunks = std::min(a.rows, 4 * threads);
  const Isa isa = best_isa();
  if (chunks <= 1) return rows(a, 0, a.rows, isa);
  const int per = (a.rows + chunks - 1) / chunks;
  parallel_for(chunks, threads, [&a, per, isa](int c) { rows(a, c * per, std::min(a.rows, (c + 1) * per), isa); });
}

}  // namespace bebert
