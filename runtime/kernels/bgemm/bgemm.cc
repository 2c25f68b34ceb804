// Driver of the binary linear layer: argument checks, ISA dispatch, the prepared-weight cache, and the one
// parallel pass that quantizes, builds tables, runs the hot loops (bgemm_<isa>.cc) and applies the
// scale/offset/bias epilogue.
//
// Per call there is ONE fork/join of the worker pool (two for an asymmetric quantizer, whose minimum over the
// whole input must be known before any code is formed): the work is cut into (token chunk, row chunk) tasks, and
// every task quantizes and builds the tables of its own tokens into per-thread buffers that only ever grow. With
// M >= 8 tokens per thread the row chunk is the whole of N, so no table is built twice; at M = 1 the row chunks
// split N and each builds the one token's tables (a few hundred instructions) again instead of joining first.
// Weights are arranged for the ISA's kernel once per weight buffer (cached, see clear_prepared_weights).
#include "bgemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "../core/bitpack.h"
#include "../core/thread_pool.h"
#include "lut_prepare.h"

namespace bebert {

namespace {

constexpr int kBlockN = 64;   // row granularity of tasks: the AVX-512 tile; two 32-row AVX2/NEON blocks
constexpr int kSubN = 256;    // rows per inner step of a task: its dots tile stays in L1/L2

// ---- prepared weights -------------------------------------------------------------------------------------
enum class Layout : int { kRowSums = 0, kRows32 = 1, kQuads64 = 2, kWords8 = 3 };

struct Prepared {
  std::vector<int32_t> rowsum;  // [N rounded up to 64]: K - 2 * popcount(row), zero for padding rows
  std::vector<uint8_t> wt;      // the layout's arrangement (empty for kRowSums)
};

struct Key {
  const uint8_t* w; int N, K, layout;
  bool operator==(const Key& o) const { return w == o.w && N == o.N && K == o.K && layout == o.layout; }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    return std::hash<const void*>()(k.w) ^ (static_cast<size_t>(k.N) * 0x9E3779B1u) ^ (static_cast<size_t>(k.K) << 20) ^
           static_cast<size_t>(k.layout);
  }
};
struct Entry { uint64_t fingerprint; std::shared_ptr<const Prepared> p; uint64_t used; size_t bytes; };

struct Cache {
  std::mutex mu;
  std::unordered_map<Key, Entry, KeyHash> map;
  size_t bytes = 0;
  uint64_t clock = 0;
};
Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: ops may still run during static destruction
  return *c;
}
constexpr size_t kCacheBytes = size_t{1} << 30;  // arranged weights of ~20 BERT-base members

// Samples 16 evenly spaced words plus the last one (every word of buffers up to 256 bytes): enough to tell a
// new weight buffer that reuses a freed one's address from it (two different weight matrices agree on 17 random
// 64-bit words with probability ~0), at a cost independent of the layer size. The kernels never read the raw
// buffer again once it is arranged, so each sampled word is a cache miss (~0.1 us): 256 samples measured ~20 us
// per call at M = 1, as much as the GEMM itself.
uint64_t fingerprint(const uint8_t* w, size_t bytes) {
  const size_t n = bytes / 8;
  const size_t step = n <= 32 ? 1 : n / 16;
  uint64_t h = 0x9E3779B97F4A7C15ull ^ bytes;
  auto mix = [&](size_t i) {
    uint64_t v;
    std::memcpy(&v, w + 8 * i, 8);
    h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  };
  for (size_t i = 0; i < n; i += step) mix(i);
  if (n) mix(n - 1);
  return h;
}

std::shared_ptr<const Prepared> build_prepared(const uint8_t* w, int N, int K, Layout layout) {
  auto p = std::make_shared<Prepared>();
  const int Wd = words_per_row(K), RB = row_bytes(K);
  const int Np = (N + kBlockN - 1) / kBlockN * kBlockN;
  p->rowsum.assign(Np, 0);
  for (int n = 0; n < N; ++n) {
    int32_t pc = 0;
    for (int i = 0; i < Wd; ++i) {
      uint64_t v;
      std::memcpy(&v, w + static_cast<size_t>(n) * RB + 8 * i, 8);
      pc += __builtin_popcountll(v);
    }
    p->rowsum[n] = K - 2 * pc;
  }
  if (layout == Layout::kRows32) {
    p->wt.resize(static_cast<size_t>((N + 31) / 32) * RB * 32);
    lut_arrange_rows32(w, N, RB, p->wt.data());
  } else if (layout == Layout::kQuads64) {
    p->wt.resize(static_cast<size_t>(Np / 64) * RB * 128);
    lut_arrange_quads64(w, N, RB, p->wt.data());
  } else if (layout == Layout::kWords8) {
    p->wt.resize(static_cast<size_t>((N + 7) / 8) * Wd * 64);
    lut_arrange_words8(w, N, Wd, reinterpret_cast<uint64_t*>(p->wt.data()));
  }
  return p;
}

std::shared_ptr<const Prepared> prepared(const uint8_t* w, int N, int K, Layout layout) {
  const uint64_t fp = fingerprint(w, static_cast<size_t>(N) * row_bytes(K));
  const Key key{w, N, K, static_cast<int>(layout)};
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lk(c.mu);
    auto it = c.map.find(key);
    if (it != c.map.end() && it->second.fingerprint == fp) {
      it->second.used = ++c.clock;
      return it->second.p;
    }
  }
  auto p = build_prepared(w, N, K, layout);  // outside the lock: a first call must not stall other layers
  const size_t bytes = p->wt.size() + 4 * p->rowsum.size() + 64;
  std::lock_guard<std::mutex> lk(c.mu);
  auto it = c.map.find(key);
  if (it != c.map.end()) c.bytes -= it->second.bytes;
  c.map[key] = Entry{fp, p, ++c.clock, bytes};
  c.bytes += bytes;
  while (c.bytes > kCacheBytes && c.map.size() > 1) {  // evict the least recently used (never the new entry)
    auto old = c.map.begin();
    for (auto j = c.map.begin(); j != c.map.end(); ++j)
      if (j->second.used < old->second.used) old = j;
    c.bytes -= old->second.bytes;
    c.map.erase(old);
  }
  return p;
}

// ---- the work of one call -----------------------------------------------------------------------------------
enum class Path { kFloat, kLut, kAvx2Lut, kAvx512Lut, kAvx512Sign, kCounts };  // kLut: NEON

struct Part {
  const uint8_t* w = nullptr;
  const float* alpha = nullptr;
  ActQuant q;
  RowQuant rq{ActMode::kFloat, 1, 0, 0, 1.0f, 0.0f};
  Path path = Path::kFloat;
  int shares_tables_with = -1;     // index of an earlier part with the same quantizer (its tables are reused)
  int c = 0;                       // LUT: sum q s = dots + c * rowsum, c = qn + 2^(bits-1)
  std::shared_ptr<const Prepared> prep;
};

bool same_quantizer(const ActQuant& a, const ActQuant& b) {
  if (a.mode != b.mode) return false;
  if (a.mode == ActMode::kSign) return true;
  if (a.mode == ActMode::kFloat) return true;
  return a.bits == b.bits && a.symmetric == b.symmetric && a.step == b.step;
}

#if defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
// min over n floats in 16 independent lanes (vectorised by the compiler; min is exact, so the order is free).
float min_of(const float* x, size_t n) {
  float lanes[16];
  for (int j = 0; j < 16; ++j) lanes[j] = x[0];
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) lanes[j] = x[i + j] < lanes[j] ? x[i + j] : lanes[j];
  float mn = lanes[0];
  for (int j = 1; j < 16; ++j) mn = lanes[j] < mn ? lanes[j] : mn;
  for (; i < n; ++i) mn = x[i] < mn ? x[i] : mn;
  return mn;
}

float parallel_min(const float* x, size_t n, int threads) {
  if (threads <= 1 || n < (size_t{1} << 15)) return min_of(x, n);
  struct Job { const float* x; size_t n, per; float part[64]; } job;  // one captured pointer: no allocation
  const int chunks = std::min(threads, 64);
  job.x = x; job.n = n; job.per = (n + chunks - 1) / chunks;
  for (int i = 0; i < chunks; ++i) job.part[i] = x[0];
  parallel_for(chunks, threads, [&job](int i) {
    const size_t b = i * job.per, e = std::min(job.n, b + job.per);
    if (b < e) job.part[i] = min_of(job.x + b, e - b);
  });
  return min_of(job.part, chunks);
}

RowQuant row_quant(const ActQuant& q) {
  RowQuant rq{q.mode, 1, 0, 0, q.step, 0.0f};
  if (q.mode == ActMode::kInt) {
    rq.B = q.bits;
    rq.qn = q.symmetric ? -(1 << (q.bits - 1)) : 0;
    rq.qp = q.symmetric ? (1 << (q.bits - 1)) - 1 : (1 << q.bits) - 1;
  }
  return rq;
}

using QuantFn = int32_t (*)(const float*, int, const RowQuant&, uint64_t*);
using CountsFn = void (*)(const CountArgs&, int, int);
using FloatFn = void (*)(const float*, int, int, const uint8_t*, int, float*, int, int);
using TablesFn = void (*)(const float*, int, const RowQuant&, int8_t*);
using DotsFn = void (*)(const LutPrep&, int32_t*, int, int);

QuantFn quant_for(Isa isa) { return isa == Isa::kAvx2 || isa == Isa::kAvx512 ? quantize_row_avx2 : quantize_row_scalar; }
CountsFn counts_for(Isa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case Isa::kAvx512: return counts_avx512;
#endif
    case Isa::kAvx2: return counts_avx2;
    case Isa::kNeon: return counts_neon;
    default: return counts_scalar;
  }
}
FloatFn floats_for(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
    case Isa::kAvx2: return float_dots_avx2;
    case Isa::kNeon: return float_dots_neon;
    default: return float_dots_scalar;
  }
}

// Grow-only per-thread scratch: after the first call of the largest layer, no call allocates.
template <typename T>
T* scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

bool is_lut(Path p) { return p == Path::kLut || p == Path::kAvx2Lut || p == Path::kAvx512Lut; }

struct Call {
  int M = 0, N = 0, K = 0, S = 0, threads = 1;
  const float* x = nullptr;
  const float* bias = nullptr;
  float* y = nullptr;
  Isa isa = Isa::kScalar;
  bool relu = false;
  Part parts[2];
  // Tables of all M tokens built before the tasks (when several tasks share a token chunk), else nullptr; with
  // them, on AVX2, each token's table constant (lut_token_consts_avx2), so no task recomputes it.
  int8_t* shared_tables[2] = {nullptr, nullptr};
  int32_t* shared_tconst[2] = {nullptr, nullptr};
};

// Epilogue of rows [n0, n1) for tokens [0, mc): y = sum_s alpha_s * val_s + bias, halves in order (the same float
// operations, in the same order, on every ISA: integer modes stay bit-identical).
// ival[s] holds qdot (kInt: sum q * s; kSign: the +-1 dot), fval[s] the float dots; both [mc][ld], column n.
#if defined(__x86_64__)
// The AVX2 path's epilogue is vectorised for AVX2 too (an ifunc picks the clone when the CPU has it); separate
// multiplies and adds either way (-ffp-contract=off), so the clone computes the same floats.
__attribute__((target_clones("avx2", "default")))
#endif
void epilogue(const Call& c, const int32_t* const* ival, const float* const* fval, int ld, int mc, int n0, int n1,
              float* y) {
  const int N = c.N, w = n1 - n0;
  for (int m = 0; m < mc; ++m) {
    float* yr = y + static_cast<size_t>(m) * N + n0;
    for (int s = 0; s < c.S; ++s) {
      const Part& p = c.parts[s];
      const float* alpha = p.alpha + n0;
      float tmp[kSubN];
      if (p.path == Path::kFloat) {
        const float* f = fval[s] + static_cast<size_t>(m) * ld + n0;
        for (int i = 0; i < w; ++i) tmp[i] = alpha[i] * f[i];
      } else if (p.q.mode == ActMode::kSign) {
        const int32_t* d = ival[s] + static_cast<size_t>(m) * ld + n0;
        for (int i = 0; i < w; ++i) tmp[i] = alpha[i] * static_cast<float>(d[i]);
      } else {
        const int32_t* d = ival[s] + static_cast<size_t>(m) * ld + n0;
        const int32_t* rs = p.prep->rowsum.data() + n0;
        const float step = p.q.step, off = p.rq.offset;
        for (int i = 0; i < w; ++i)
          tmp[i] = alpha[i] * (step * static_cast<float>(d[i]) + off * static_cast<float>(rs[i]));
      }
      if (s == 0) for (int i = 0; i < w; ++i) yr[i] = tmp[i];
      else for (int i = 0; i < w; ++i) yr[i] = yr[i] + tmp[i];
    }
    if (c.bias)
      for (int i = 0; i < w; ++i) yr[i] = yr[i] + c.bias[n0 + i];
  }
}

// The fused ReLU of rows [n0, n1) for tokens [0, mc), while the tile is still in L1.
#if defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
void relu_tile(float* y, int N, int mc, int n0, int n1) {
  for (int m = 0; m < mc; ++m) {
    float* yr = y + static_cast<size_t>(m) * N;
    for (int n = n0; n < n1; ++n) yr[n] = yr[n] > 0.0f ? yr[n] : 0.0f;
  }
}

struct Scratch {
  std::vector<int8_t> tables[2];
  std::vector<int8_t> shared_tables[2];  // the caller's: every task of one call reads them
  std::vector<int32_t> shared_tconst[2];
  std::vector<uint64_t> planes[2];
  std::vector<int32_t> usum[2];
  std::vector<int32_t> tconst[2];  // AVX2 table-lookup constants of this task's tokens
  std::vector<int32_t> ival[2];
  std::vector<float> fval[2];
};
Scratch& thread_scratch() {
  thread_local Scratch s;
  return s;
}

TablesFn tables_fn(const Part& p, Isa isa) {
#if defined(__x86_64__)
  return p.path == Path::kAvx512Lut ? lut_row_tables_avx512 : isa == Isa::kNeon ? lut_row_tables_neon : lut_row_tables_avx2;
#else
  (void)p; (void)isa;
  return lut_row_tables_neon;
#endif
}

// One task: tokens [m0, m1), rows [n0, n1) of every part, written to y.
void run_task(const Call& c, int m0, int m1, int n0, int n1) {
  Scratch& sc = thread_scratch();
  const int mc = m1 - m0, K = c.K, N = c.N, RB = row_bytes(K), G = 2 * RB, Wd = words_per_row(K);
  const float* x = c.x + static_cast<size_t>(m0) * K;
  float* y = c.y + static_cast<size_t>(m0) * N;
  const int8_t* tabs[2] = {nullptr, nullptr};
  const uint64_t* planes[2] = {nullptr, nullptr};
  const int32_t* usum[2] = {nullptr, nullptr};
  // 1. per part: codes / tables / bit planes of this task's tokens (shared when the quantizer is shared)
  for (int s = 0; s < c.S; ++s) {
    const Part& p = c.parts[s];
    if (p.shares_tables_with >= 0) {
      tabs[s] = tabs[p.shares_tables_with];
      planes[s] = planes[p.shares_tables_with];
      usum[s] = usum[p.shares_tables_with];
      continue;
    }
    if (is_lut(p.path)) {
      if (c.shared_tables[s]) {
        tabs[s] = c.shared_tables[s] + static_cast<size_t>(m0) * G * 16;
        continue;
      }
      int8_t* t = scratch(sc.tables[s], static_cast<size_t>(mc) * G * 16);
      const TablesFn fn = tables_fn(p, c.isa);
      for (int m = 0; m < mc; ++m) fn(x + static_cast<size_t>(m) * K, K, p.rq, t + static_cast<size_t>(m) * G * 16);
      tabs[s] = t;
    } else if (p.path == Path::kCounts || p.path == Path::kAvx512Sign) {
      const size_t per = static_cast<size_t>(p.rq.B) * Wd;
      uint64_t* pl = scratch(sc.planes[s], static_cast<size_t>(mc) * per);
      int32_t* us = scratch(sc.usum[s], mc);
      std::fill(pl, pl + mc * per, 0);
      const QuantFn fn = quant_for(c.isa);
      for (int m = 0; m < mc; ++m) us[m] = fn(x + static_cast<size_t>(m) * K, K, p.rq, pl + m * per);
      planes[s] = pl;
      usum[s] = us;
    }
  }
  // 2. AVX-512 and AVX2: dots and epilogue in registers, every part of the task in one call. (Only x86-64 builds reference
  //    these symbols, so an aarch64 build links without bgemm_avx512.cc.)
#if defined(__x86_64__)
  if (c.parts[0].path == Path::kAvx512Sign) {
    Avx512SignPart sp[2];
    for (int s = 0; s < c.S; ++s)
      sp[s] = Avx512SignPart{reinterpret_cast<const uint64_t*>(c.parts[s].prep->wt.data()), c.parts[s].alpha};
    sign_gemm_avx512(sp, c.S, planes[0], mc, N, K, n0, n1, c.bias, y);
    if (c.relu) relu_tile(y, N, mc, n0, n1);
    return;
  }
  if (c.parts[0].path == Path::kAvx512Lut || c.parts[0].path == Path::kAvx2Lut) {
    const bool avx2 = c.parts[0].path == Path::kAvx2Lut;
    LutPart ap[2];
    for (int s = 0; s < c.S; ++s) {
      const Part& p = c.parts[s];
      const int32_t* tc = nullptr;  // AVX2's offset tables need one constant per token
      if (avx2 && p.shares_tables_with >= 0) {
        tc = ap[p.shares_tables_with].tconst;
      } else if (avx2 && c.shared_tconst[s]) {
        tc = c.shared_tconst[s] + m0;
      } else if (avx2) {
        int32_t* t = scratch(sc.tconst[s], mc);
        lut_token_consts_avx2(tabs[s], mc, G, t);
        tc = t;
      }
      ap[s] = LutPart{tabs[s], p.prep->wt.data(), p.prep->rowsum.data(), p.alpha, p.q.step, p.rq.offset, p.c,
                      p.q.mode == ActMode::kSign, tc};
    }
    (avx2 ? lut_gemm_avx2 : lut_gemm_avx512)(ap, c.S, mc, N, RB, n0, n1, c.bias, y);
    if (c.relu) relu_tile(y, N, mc, n0, n1);
    return;
  }
#endif
  // 3. other ISAs: integer or float dots per sub-block of rows (tiles of stride N, converted in place to the
  //    integer dot sum q * s), then the shared epilogue
  for (int b0 = n0; b0 < n1; b0 += kSubN) {
    const int b1 = std::min(n1, b0 + kSubN), w = b1 - b0;
    const int32_t* iv[2] = {nullptr, nullptr};
    const float* fv[2] = {nullptr, nullptr};
    for (int s = 0; s < c.S; ++s) {
      const Part& p = c.parts[s];
      if (p.path == Path::kFloat) {
        float* f = scratch(sc.fval[s], static_cast<size_t>(mc) * N);
        floats_for(c.isa)(x, mc, K, p.w, N, f, b0, b1);
        fv[s] = f;
        continue;
      }
      int32_t* d = scratch(sc.ival[s], static_cast<size_t>(mc) * N);
      const int32_t* rs = p.prep->rowsum.data() + b0;
      if (p.path == Path::kLut) {
        LutPrep lp;
        lp.M = mc; lp.N = N; lp.RB = RB; lp.tables = tabs[s]; lp.wt = p.prep->wt.data();
        lut_dots_neon(lp, d, b0, b1);
        if (p.c != 0)
          for (int m = 0; m < mc; ++m) {
            int32_t* dr = d + static_cast<size_t>(m) * N + b0;
            for (int i = 0; i < w; ++i) dr[i] += p.c * rs[i];
          }
      } else {
        CountArgs ca{planes[s], p.rq.B, reinterpret_cast<const uint64_t*>(p.w), Wd, mc, N,
                     p.q.mode == ActMode::kSign, d};
        counts_for(c.isa)(ca, b0, b1);
        for (int m = 0; m < mc; ++m) {
          int32_t* dr = d + static_cast<size_t>(m) * N + b0;
          if (p.q.mode == ActMode::kSign) {
            for (int i = 0; i < w; ++i) dr[i] = K - 2 * dr[i];
          } else {
            // sum_k q_k s_k = sum_k u_k s_k + qn * rowsum = (usum - 2 * sum_{bit=1} u) + qn * rowsum
            const int32_t u = usum[s][m];
            for (int i = 0; i < w; ++i) dr[i] = u - 2 * dr[i] + p.rq.qn * rs[i];
          }
        }
      }
      iv[s] = d;
    }
    epilogue(c, iv, fv, N, mc, b0, b1, y);
    if (c.relu) relu_tile(y, N, mc, b0, b1);
  }
}

void run(Call& c) {
  const int M = c.M, N = c.N, K = c.K;
  for (int s = 0; s < c.S; ++s) {
    Part& p = c.parts[s];
    p.rq = row_quant(p.q);
    const bool lut_ok = (p.q.mode == ActMode::kInt && p.q.bits <= 4) || p.q.mode == ActMode::kSign;
    if (p.q.mode == ActMode::kFloat) p.path = Path::kFloat;
    else if (p.q.mode == ActMode::kSign && c.isa == Isa::kAvx512) p.path = Path::kAvx512Sign;
    else if (lut_ok && c.isa == Isa::kAvx512) p.path = Path::kAvx512Lut;
    else if (lut_ok && c.isa == Isa::kAvx2) p.path = Path::kAvx2Lut;
    else if (lut_ok && c.isa == Isa::kNeon) p.path = Path::kLut;
    else p.path = Path::kCounts;
  }
  // The x86 kernels run every part of a call together: only when all parts take the same one of them
  // (a float or 5..8-bit half beside a table-lookup half is not a layer we export; it takes the general loops).
  const auto fused = [](Path p) { return p == Path::kAvx2Lut || p == Path::kAvx512Lut || p == Path::kAvx512Sign; };
  bool one_fused = fused(c.parts[0].path);
  for (int s = 1; s < c.S; ++s) one_fused = one_fused && c.parts[s].path == c.parts[0].path;
  // The asymmetric quantizers' offset is the minimum of x, whatever their step: found once per call for both halves.
  bool have_min = false;
  float x_min = 0.0f;
  for (int s = 0; s < c.S; ++s) {
    Part& p = c.parts[s];
    if (!one_fused && fused(p.path)) p.path = Path::kCounts;
    for (int t = 0; t < s; ++t)
      if (same_quantizer(c.parts[t].q, p.q) && c.parts[t].path == p.path && p.path != Path::kFloat)
        p.shares_tables_with = t;
    if (p.q.mode == ActMode::kInt && p.q.bits <= 4) p.c = p.rq.qn + (1 << (p.q.bits - 1));
    if (p.q.mode == ActMode::kInt && !p.q.symmetric) {
      if (!have_min) x_min = parallel_min(c.x, static_cast<size_t>(M) * K, c.threads);
      have_min = true;
      p.rq.offset = x_min;
    }
    const Layout layout = p.path == Path::kAvx512Lut    ? Layout::kQuads64
                          : p.path == Path::kAvx512Sign ? Layout::kWords8
                          : p.path == Path::kLut || p.path == Path::kAvx2Lut ? Layout::kRows32
                                                        : Layout::kRowSums;
    if (p.path != Path::kFloat) p.prep = prepared(p.w, N, K, layout);
  }
  // Tasks: token chunks of >= 8 tokens (tables built once per token), then row chunks for the rest of the
  // threads' share, at least 4 tasks per thread so the dynamic schedule balances a busy machine.
  const int want = 4 * c.threads;
  const int tok_chunks = std::max(1, std::min(M / 8, want));
  const int blocks = (N + kBlockN - 1) / kBlockN;
  const int row_chunks = std::max(1, std::min(blocks, (want + tok_chunks - 1) / tok_chunks));
  const int bpc = (blocks + row_chunks - 1) / row_chunks;
  const int rcs = (blocks + bpc - 1) / bpc;
  const int mper = (M + tok_chunks - 1) / tok_chunks;
  const int tcs = (M + mper - 1) / mper;
  // Several row chunks per token chunk (few tokens, e.g. real sentences of ~30): each task would rebuild its
  // tokens' tables, so they are built once, in parallel over tokens, before the tasks.
  if (rcs > 1) {
    Scratch& sc = thread_scratch();
    const int G16 = 2 * row_bytes(K) * 16;
    for (int s = 0; s < c.S; ++s) {
      const Part& p = c.parts[s];
      if (!is_lut(p.path) || p.shares_tables_with >= 0) continue;
      c.shared_tables[s] = scratch(sc.shared_tables[s], static_cast<size_t>(M) * G16);
      if (p.path == Path::kAvx2Lut) c.shared_tconst[s] = scratch(sc.shared_tconst[s], M);
    }
    if (c.shared_tables[0] || c.shared_tables[1]) {
      struct Tables { const Call* c; int G16; } tp{&c, G16};
      parallel_for(M, c.threads, [&tp](int m) {
        const Call& c = *tp.c;
        for (int s = 0; s < c.S; ++s)
          if (c.shared_tables[s]) {
            int8_t* t = c.shared_tables[s] + static_cast<size_t>(m) * tp.G16;
            tables_fn(c.parts[s], c.isa)(c.x + static_cast<size_t>(m) * c.K, c.K, c.parts[s].rq, t);
#if defined(__x86_64__)
            if (c.shared_tconst[s]) lut_token_consts_avx2(t, 1, tp.G16 / 16, c.shared_tconst[s] + m);
#endif
          }
      });
    }
  }
  // The task body captures one pointer, so std::function keeps it in place: no heap allocation per call.
  struct Plan { const Call* c; int rcs, mper, bpc; } plan{&c, rcs, mper, bpc};
  parallel_for(tcs * rcs, c.threads, [&plan](int task) {
    const Call& c = *plan.c;
    const int tc = task / plan.rcs, rc = task % plan.rcs;
    const int m0 = tc * plan.mper, m1 = std::min(c.M, m0 + plan.mper);
    const int n0 = rc * plan.bpc * kBlockN, n1 = std::min(c.N, n0 + plan.bpc * kBlockN);
    if (m0 < m1 && n0 < n1) run_task(c, m0, m1, n0, n1);
  });
}

Isa resolve(Isa isa) {
  if (isa == Isa::kAuto || !isa_supported(isa)) return best_isa();
  return isa;
}

}  // namespace

std::string validate(const BinaryLinearArgs& a) {
  if (a.M < 1 || a.N < 1 || a.K < 1) return "M, N and K must be positive";
  if (a.S < 1 || a.S > 2) return "S (number of TWS parts) must be 1 or 2";
  if (!a.x || !a.w || !a.alpha || !a.act || !a.y) return "null input or output pointer";
  for (int s = 0; s < a.S; ++s) {
    const ActQuant& q = a.act[s];
    if (q.mode == ActMode::kInt) {
      if (q.bits < 2 || q.bits > 8) return "integer activations need 2..8 bits";
      if (!(q.step > 0.0f) || !std::isfinite(q.step)) return "activation step must be a positive finite number";
    } else if (q.mode != ActMode::kFloat && q.mode != ActMode::kSign) {
      return "unknown activation mode";
    }
  }
  if (a.threads < 1) return "threads must be >= 1";
  return "";
}

void binary_linear(const BinaryLinearArgs& a, Isa isa) {
  Call c;
  c.M = a.M; c.N = a.N; c.K = a.K; c.S = a.S; c.threads = a.threads;
  c.x = a.x; c.bias = a.bias; c.y = a.y; c.isa = resolve(isa); c.relu = a.relu;
  const size_t wstride = static_cast<size_t>(a.N) * row_bytes(a.K);
  for (int s = 0; s < a.S; ++s) {
    c.parts[s].w = a.w + s * wstride;
    c.parts[s].alpha = a.alpha + static_cast<size_t>(s) * a.N;
    c.parts[s].q = a.act[s];
  }
  run(c);
}

void binary_linear_examples(const BinaryLinearArgs& a, int examples, Isa isa) {
  bool per_example = examples > 1 && a.M % examples == 0;
  bool asym = false;
  for (int s = 0; s < a.S; ++s) asym = asym || (a.act[s].mode == ActMode::kInt && !a.act[s].symmetric);
  if (!per_example || !asym) return binary_linear(a, isa);
  const int rows = a.M / examples;
  for (int e = 0; e < examples; ++e) {
    BinaryLinearArgs part = a;
    part.M = rows;
    part.x = a.x + static_cast<size_t>(e) * rows * a.K;
    part.y = a.y + static_cast<size_t>(e) * rows * a.N;
    binary_linear(part, isa);
  }
}

std::string validate_pair(const BinaryPairArgs& a) {
  if (!a.w[0] || !a.w[1] || !a.alpha[0] || !a.alpha[1]) return "null input or output pointer";
  if (a.examples < 1) return "examples must be >= 1";
  BinaryLinearArgs b;
  b.M = a.M; b.N = a.N; b.K = a.K; b.S = 1; b.x = a.x; b.w = a.w[0]; b.alpha = a.alpha[0]; b.act = &a.act;
  b.y = a.y; b.threads = a.threads;
  return validate(b);
}

void binary_linear_pair(const BinaryPairArgs& a, Isa isa) {
  const bool per_example = a.examples > 1 && a.M % a.examples == 0 && a.act.mode == ActMode::kInt && !a.act.symmetric;
  const int parts = per_example ? a.examples : 1, rows = a.M / parts;
  for (int e = 0; e < parts; ++e) {
    Call c;
    c.M = rows; c.N = a.N; c.K = a.K; c.S = 2; c.threads = a.threads;
    c.x = a.x + static_cast<size_t>(e) * rows * a.K;
    c.y = a.y + static_cast<size_t>(e) * rows * a.N;
    c.bias = a.bias; c.isa = resolve(isa); c.relu = a.relu;
    for (int s = 0; s < 2; ++s) {
      c.parts[s].w = a.w[s];
      c.parts[s].alpha = a.alpha[s];
      c.parts[s].q = a.act;
    }
    run(c);
  }
}

void clear_prepared_weights() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lk(c.mu);
  c.map.clear();
  c.bytes = 0;
}

bool parse_isa(const char* name, Isa* out) {
  if (!name) return false;
  const struct { const char* n; Isa i; } names[] = {{"auto", Isa::kAuto}, {"scalar", Isa::kScalar}, {"avx2", Isa::kAvx2},
                                                    {"avx512", Isa::kAvx512}, {"neon", Isa::kNeon}};
  for (const auto& e : names)
    if (std::strcmp(name, e.n) == 0) { *out = e.i; return true; }
  return false;
}

namespace {
Isa hardware_best() {
#if defined(__aarch64__)
  return Isa::kNeon;
#elif defined(__x86_64__)
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  return isa_supported(Isa::kAvx2) ? Isa::kAvx2 : Isa::kScalar;
#else
  return Isa::kScalar;
#endif
}
}  // namespace

Isa best_isa() {
  // Read on every call (a getenv is ~100 ns against a GEMM of microseconds), so a test can switch paths.
  Isa forced;
  if (parse_isa(std::getenv("BEBERT_ISA"), &forced) && forced != Isa::kAuto && isa_supported(forced)) return forced;
  return hardware_best();
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
#if defined(__x86_64__)
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
    case Isa::kAvx512:
      return isa_supported(Isa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi") &&
             __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vpopcntdq");
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return true;
#endif
    default: return false;
  }
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kNeon: return "neon";
    case Isa::kAvx512: return "avx512";
    default: return "auto";
  }
}

}  // namespace bebert
