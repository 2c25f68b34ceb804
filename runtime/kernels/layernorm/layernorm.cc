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
// 16 float lanes as one GCC / Clang vector (one zmm: the AVX-512 instance; the others use Split below): the lane
// structure, and so the order of every float operation, is the same on every target.
typedef float Lanes16 __attribute__((vector_size(64)));
// The same 16 lanes as P explicit vectors of 16 / P lanes: GCC 12 lowers a 64-byte vector through the stack
// where the target has no 64-byte registers (under target("avx2") half the instructions of a row were spills,
// slower than the baseline build; on aarch64 and baseline x86-64 a quarter). AVX2 takes 2 x 8 lanes, NEON and
// baseline x86-64 4 x 4; only AVX-512 keeps the one 64-byte vector. Part u holds lanes 16 / P * u ...
template <int P>
struct Split {
  static constexpr int kW = kLanes / P;
  typedef float V __attribute__((vector_size(4 * kW)));
  V part[P];
};
template <int P>
__attribute__((always_inline)) inline Split<P>& operator+=(Split<P>& a, const Split<P>& b) {
  for (int u = 0; u < P; ++u) a.part[u] += b.part[u];
  return a;
}
template <int P>
__attribute__((always_inline)) inline Split<P>& operator-=(Split<P>& a, float s) {
  for (int u = 0; u < P; ++u) a.part[u] -= s;
  return a;
}
template <int P>
__attribute__((always_inline)) inline Split<P> operator*(const Split<P>& a, const Split<P>& b) {
  Split<P> r;
  for (int u = 0; u < P; ++u) r.part[u] = a.part[u] * b.part[u];
  return r;
}
template <int P>
__attribute__((always_inline)) inline Split<P> operator*(const Split<P>& a, float s) {
  Split<P> r;
  for (int u = 0; u < P; ++u) r.part[u] = a.part[u] * s;
  return r;
}
template <int P>
__attribute__((always_inline)) inline Split<P> operator+(const Split<P>& a, const Split<P>& b) {
  Split<P> r;
  for (int u = 0; u < P; ++u) r.part[u] = a.part[u] + b.part[u];
  return r;
}

// Lane access and the fold, for both representations.
__attribute__((always_inline)) inline void add_lane(Lanes16& v, int t, float x) { v[t] += x; }
template <int P>
__attribute__((always_inline)) inline void add_lane(Split<P>& v, int t, float x) {
  for (int u = 0; u < P; ++u)  // a constant part index for each branch (an indexed part went through memory)
    if (t / Split<P>::kW == u) v.part[u][t % Split<P>::kW] += x;
}
// The pairwise tree over the 16 lanes: lane t += lane t + w for w = 8, 4, 2, 1.
__attribute__((always_inline)) inline float fold_lanes(const Lanes16& v) {
  Lanes16 lane = v;
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int t = 0; t < w; ++t) lane[t] += lane[t + w];
  return lane[0];
}
template <int P>
__attribute__((always_inline)) inline float fold_lanes(const Split<P>& v) {
  // the steps w >= kW add whole parts (part u += part u + w / kW), the rest run inside part 0
  typename Split<P>::V p[P];
  for (int u = 0; u < P; ++u) p[u] = v.part[u];
  for (int w = kLanes / 2; w >= Split<P>::kW; w /= 2)
    for (int u = 0; u < w / Split<P>::kW; ++u) p[u] += p[u + w / Split<P>::kW];
  typename Split<P>::V lane = p[0];
  for (int w = Split<P>::kW / 2; w >= 1; w /= 2)
    for (int t = 0; t < w; ++t) lane[t] += lane[t + w];
  return lane[0];
}

// (Vectors pass by reference: by value, a 64-byte vector changes the calling convention between targets.)
__attribute__((always_inline)) inline void load16(Lanes16& v, const float* p) { std::memcpy(&v, p, sizeof v); }
__attribute__((always_inline)) inline void store16(float* p, const Lanes16& v) { std::memcpy(p, &v, sizeof v); }
// Split vectors load and store part by part (one memcpy of the whole struct went through the stack).
template <int P>
__attribute__((always_inline)) inline void load16(Split<P>& v, const float* p) {
  for (int u = 0; u < P; ++u) std::memcpy(&v.part[u], p + u * Split<P>::kW, sizeof v.part[u]);
}
template <int P>
__attribute__((always_inline)) inline void store16(float* p, const Split<P>& v) {
  for (int u = 0; u < P; ++u) std::memcpy(p + u * Split<P>::kW, &v.part[u], sizeof v.part[u]);
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
// y = (d * inv) * gamma + beta with inv = 1 / sqrt(var + eps). L: Lanes16 or a Split (same lanes, same order).
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
  for (int r = r0; r < r1; ++r) row<Split<4>>(a, r);
}
#if defined(__x86_64__)
// The same rows vectorised for AVX2 and AVX-512 (the baseline SSE2 loop ran ~1 ns per element). The lanes and the
// order of every float operation are the same in each, so they compute the same bits.
__attribute__((target("avx2"))) void rows_avx2(const LayerNormArgs& a, int r0, int r1) {
  for (int r = r0; r < r1; ++r) row<Split<2>>(a, r);
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
  // Rows in parallel only when there is enough work to pay for a fork/join: from [128, 384] up (ORT profile of a
  // MiniLM ensemble, Zen 4, 2 threads: AddLayerNorm 1.99 -> 1.51 ms per run in two interleaved runs; a sentence
  // of fewer than 43 tokens at H = 384 stays on one thread).
  const long work = static_cast<long>(a.rows) * a.cols;
  const int threads = work >= 16384 ? std::max(1, a.threads) : 1;
  const int chunks = std::min(a.rows, 4 * threads);
  const Isa isa = best_isa();
  if (chunks <= 1) return rows(a, 0, a.rows, isa);
  const int per = (a.rows + chunks - 1) / chunks;
  parallel_for(chunks, threads, [&a, per, isa](int c) { rows(a, c * per, std::min(a.rows, (c + 1) * per), isa); });
}

}  // namespace bebert
