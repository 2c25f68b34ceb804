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
// 16 float lanes as one GCC / Clang vector (one zmm, or four xmm on the baseline target): the lane structure, and
// so the order of every float operation, is the same on every target.
typedef float Lanes16 __attribute__((vector_size(64)));
// The same 16 lanes as two explicit 8-lane halves, for AVX2: GCC 12 lowers a 64-byte vector under target("avx2")
// through the stack (half the instructions of the row were spills; slower than the SSE2 build).
typedef float Lanes8 __attribute__((vector_size(32)));
struct Halves {
  Lanes8 lo, hi;  // lanes 0..7, 8..15
};
__attribute__((always_inline)) inline Halves& operator+=(Halves& a, const Halves& b) {
  a.lo += b.lo;
  a.hi += b.hi;
  return a;
}
__attribute__((always_inline)) inline Halves& operator-=(Halves& a, float s) {
  a.lo -= s;
  a.hi -= s;
  return a;
}
__attribute__((always_inline)) inline Halves operator*(const Halves& a, const Halves& b) { return {a.lo * b.lo, a.hi * b.hi}; }
__attribute__((always_inline)) inline Halves operator*(const Halves& a, float s) { return {a.lo * s, a.hi * s}; }
__attribute__((always_inline)) inline Halves operator+(const Halves& a, const Halves& b) { return {a.lo + b.lo, a.hi + b.hi}; }

// Lane access and the fold, for both representations (lane t of Halves is lane t % 8 of half t / 8).
__attribute__((always_inline)) inline void add_lane(Lanes16& v, int t, float x) { v[t] += x; }
__attribute__((always_inline)) inline void add_lane(Halves& v, int t, float x) {
  if (t < 8) v.lo[t] += x;
  else v.hi[t - 8] += x;
}
// The pairwise tree over the 16 lanes: lane t += lane t + w for w = 8, 4, 2, 1.
__attribute__((always_inline)) inline float fold_lanes(Lanes16 lane) {
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int t = 0; t < w; ++t) lane[t] += lane[t + w];
  return lane[0];
}
__attribute__((always_inline)) inline float fold_lanes(const Halves& v) {
  Lanes8 lane = v.lo + v.hi;  // the w = 8 step
  for (int w = 4; w >= 1; w /= 2)
    for (int t = 0; t < w; ++t) lane[t] += lane[t + w];
  return lane[0];
}

// (Vectors pass by reference: by value, a 64-byte vector changes the calling convention between targets.)
__attribute__((always_inline)) inline void load16(Lanes16& v, const float* p) { std::memcpy(&v, p, sizeof v); }
__attribute__((always_inline)) inline void store16(float* p, const Lanes16& v) { std::memcpy(p, &v, sizeof v); }
// Halves load and store each half on its own (one memcpy of the whole struct went through the stack).
__attribute__((always_inline)) inline void load16(Halves& v, const float* p) {
  std::memcpy(&v.lo, p, sizeof v.lo);
  std::memcpy(&v.hi, p + 8, sizeof v.hi);
}
__attribute__((always_inline)) inline void store16(float* p, const Halves& v) {
  std::memcpy(p, &v.lo, sizeof v.lo);
  std::memcpy(p + 8, &v.hi, sizeof v.hi);
}

// Sums run in 4 x 16 lanes (4 independent vector chains: one chain was bound by the add latency, ~3x slower):
// block q of each 64 values goes to accumulator q, a last partial 16-block and the scalar tail to accumulator 0;
// then (acc0 + acc1) + (acc2 + acc3) and a pairwise tree over the 16 lanes.
template <typename L>
struct Acc {
  L v[4] = {};
  __attribute__((always_inline)) float fold() const {
    L lane = v[0] + v[1];
    lane += v[2] + v[3];
    return fold_lanes(lane);
  }
};

// One row: s = x + residual (into y), mean = sum(s) / n, d = s - mean (into y), var = sum(d * d) / n,
// y = (d * inv) * gamma + beta with inv = 1 / sqrt(var + eps). L: Lanes16 or Halves (same lanes, same order).
template <typename L>
__attribute__((always_inline)) inline void row(const LayerNormArgs& a, int r) {
  const int n = a.cols;
  const size_t off = static_cast<size_t>(r) * n;
  const float* x = a.x + off;
  const float* res = a.residual + off;
  float* y = a.y + off;  // may alias x or residual: each element is read before it is written
  Acc<L> sum, sq;
  int j = 0;
  for (; j + 4 * kLanes <= n; j += 4 * kLanes)
    for (int q = 0; q < 4; ++q) {
      L u, v;
      load16(u, x + j + q * kLanes);
      load16(v, res + j + q * kLanes);
      v += u;
      store16(y + j + q * kLanes, v);
      sum.v[q] += v;
    }
  for (; j + kLanes <= n; j += kLanes) {
    L u, v;
    load16(u, x + j);
    load16(v, res + j);
    v += u;
    store16(y + j, v);
    sum.v[0] += v;
  }
  for (int t = 0; j + t < n; ++t) {
    y[j + t] = x[j + t] + res[j + t];
    add_lane(sum.v[0], t, y[j + t]);
  }
  const float mean = sum.fold() / static_cast<float>(n);
  j = 0;
  for (; j + 4 * kLanes <= n; j += 4 * kLanes)
    for (int q = 0; q < 4; ++q) {
      L d;
      load16(d, y + j + q * kLanes);
      d -= mean;
      store16(y + j + q * kLanes, d);
      sq.v[q] += d * d;
    }
  for (; j + kLanes <= n; j += kLanes) {
    L d;
    load16(d, y + j);
    d -= mean;
    store16(y + j, d);
    sq.v[0] += d * d;
  }
  for (int t = 0; j + t < n; ++t) {
    y[j + t] = y[j + t] - mean;
    add_lane(sq.v[0], t, y[j + t] * y[j + t]);
  }
  const float inv = 1.0f / std::sqrt(sq.fold() / static_cast<float>(n) + a.eps);
  const float* gamma = a.gamma;
  const float* beta = a.beta;
  const int nb = n / kLanes * kLanes;
  for (j = 0; j < nb; j += kLanes) {
    L v, g, b;
    load16(v, y + j);
    load16(g, gamma + j);
    load16(b, beta + j);
    v = (v * inv) * g + b;
    store16(y + j, v);
  }
  for (; j < n; ++j) y[j] = (y[j] * inv) * gamma[j] + beta[j];
}

void rows_base(const LayerNormArgs& a, int r0, int r1) {
  for (int r = r0; r < r1; ++r) row<Lanes16>(a, r);
}
#if defined(__x86_64__)
// The same rows vectorised for AVX2 and AVX-512 (the baseline SSE2 loop ran ~1 ns per element). The lanes and the
// order of every float operation are the same in each, so they compute the same bits.
__attribute__((target("avx2"))) void rows_avx2(const LayerNormArgs& a, int r0, int r1) {
  for (int r = r0; r < r1; ++r) row<Halves>(a, r);
}
BEBERT_TARGET_WIDE("avx512f") void rows_avx512(const LayerNormArgs& a, int r0, int r1) {
  for (int r = r0; r < r1; ++r) row<Lanes16>(a, r);
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
