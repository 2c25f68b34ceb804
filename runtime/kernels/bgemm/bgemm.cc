// Driver of the binary linear layer: argument checks, activation quantization into bit planes, ISA
// dispatch of the hot loops (bgemm_<isa>.cc), and the scale/offset/bias epilogue shared by every ISA.
#include "bgemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../core/bitpack.h"
#include "../core/thread_pool.h"


namespace bebert {

namespace {

constexpr int kBlockN = 64;  // rows of W per parallel task: 64 rows * K bits stay in L1 across all M rows

struct Planes {
  std::vector<uint64_t> bits;  // [M][B][Wd]
  std::vector<int32_t> usum;   // [M], sum of the unsigned codes u = q - qn (kInt)
  int B = 0;
  int qn = 0;
  float offset = 0.0f;         // asymmetric zero offset (min of X)
};

using QuantFn = int32_t (*)(const float*, int, const RowQuant&, uint64_t*);

// Quantizes X per ActQuant into B bit planes of the unsigned code u = q - qn (kInt) or one sign plane (kSign).
Planes quantize(const BinaryLinearArgs& a, const ActQuant& q, QuantFn fn, int threads) {
  Planes p;
  const int Wd = words_per_row(a.K);
  const int M = a.M, K = a.K;
  RowQuant rq{q.mode, 1, 0, 0, q.step, 0.0f};
  if (q.mode == ActMode::kInt) {
    rq.B = q.bits;
    rq.qn = q.symmetric ? -(1 << (q.bits - 1)) : 0;
    rq.qp = q.symmetric ? (1 << (q.bits - 1)) - 1 : (1 << q.bits) - 1;
    if (!q.symmetric) {
      float mn = a.x[0];
      const size_t n = static_cast<size_t>(M) * K;
      for (size_t i = 1; i < n; ++i) mn = std::min(mn, a.x[i]);
      rq.offset = mn;
    }
  }
  p.B = rq.B;
  p.qn = rq.qn;
  p.offset = rq.offset;
  p.bits.assign(static_cast<size_t>(M) * p.B * Wd, 0);
  p.usum.assign(M, 0);
  parallel_for(M, threads, [&](int m) {
    p.usum[m] = fn(a.x + static_cast<size_t>(m) * K, K, rq, p.bits.data() + static_cast<size_t>(m) * p.B * Wd);
  });
  return p;
}

std::vector<int32_t> row_sums(const uint8_t* w, int N, int K) {
  std::vector<int32_t> out(N);
  const int Wd = words_per_row(K);
  const auto* words = reinterpret_cast<const uint64_t*>(w);
  for (int n = 0; n < N; ++n) {
    int32_t pc = 0;
    for (int i = 0; i < Wd; ++i) pc += __builtin_popcountll(words[static_cast<size_t>(n) * Wd + i]);
    out[n] = K - 2 * pc;
  }
  return out;
}

using CountsFn = void (*)(const CountArgs&, int, int);

QuantFn quant_for(Isa isa) { return isa == Isa::kAvx2 ? quantize_row_avx2 : quantize_row_scalar; }
using FloatFn = void (*)(const float*, int, int, const uint8_t*, int, float*, int, int);

CountsFn counts_for(Isa isa) {
  switch (isa) {
    case Isa::kAvx2: return counts_avx2;
    case Isa::kNeon: return counts_neon;
    default: return counts_scalar;
  }
}

FloatFn floats_for(Isa isa) {
  switch (isa) {
    case Isa::kAvx2: return float_dots_avx2;
    case Isa::kNeon: return float_dots_neon;
    default: return float_dots_scalar;
  }
}

template <typename F>
void parallel_blocks(int N, int threads, F&& body) {
  const int blocks = (N + kBlockN - 1) / kBlockN;
  parallel_for(blocks, threads, [&](int b) { body(b * kBlockN, std::min(N, (b + 1) * kBlockN)); });
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
  if (isa == Isa::kAuto || !isa_supported(isa)) isa = best_isa();
  const int M = a.M, N = a.N, K = a.K;
  const int Wd = words_per_row(K);
  const size_t wstride = static_cast<size_t>(N) * row_bytes(K);
  for (size_t i = 0; i < static_cast<size_t>(M) * N; ++i) a.y[i] = 0.0f;
  std::vector<float> fbuf;
  std::vector<int32_t> cbuf;
  for (int s = 0; s < a.S; ++s) {
    const ActQuant& q = a.act[s];
    const uint8_t* w = a.w + s * wstride;
    const float* alpha = a.alpha + static_cast<size_t>(s) * N;
    if (q.mode == ActMode::kFloat) {
      fbuf.assign(static_cast<size_t>(M) * N, 0.0f);
      FloatFn fn = floats_for(isa);
      parallel_blocks(N, a.threads, [&](int n0, int n1) { fn(a.x, M, K, w, N, fbuf.data(), n0, n1); });
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) a.y[static_cast<size_t>(m) * N + n] += alpha[n] * fbuf[static_cast<size_t>(m) * N + n];
      continue;
    }
    const bool lut_int = q.mode == ActMode::kInt && q.bits <= 4, lut_sign = q.mode == ActMode::kSign;
    if ((isa == Isa::kAvx2 || isa == Isa::kNeon) && (lut_int || lut_sign)) {
      // Table lookup: dots = sum_k v_k s_k with v = q - c, c = qn + 2^(bits-1); so sum q s = dots + c * rowsum.
      // Sign activations use v = sign(x) directly (dots is the answer); per weight bit the lookup costs about
      // half of what XOR + nibble popcount + a horizontal sum per output cost.
      RowQuant rq{q.mode, q.bits, q.symmetric ? -(1 << (q.bits - 1)) : 0,
                  q.symmetric ? (1 << (q.bits - 1)) - 1 : (1 << q.bits) - 1, q.step, 0.0f};
      if (!q.symmetric && lut_int) rq.offset = *std::min_element(a.x, a.x + static_cast<size_t>(M) * K);
      LutPrep prep;
      const bool neon = isa == Isa::kNeon;
      (neon ? lut_prepare_neon : lut_prepare_avx2)(a.x, M, K, rq, w, N, prep, a.threads);
      cbuf.assign(static_cast<size_t>(M) * N, 0);
      const auto dots = neon ? lut_dots_neon : lut_dots_avx2;
      parallel_blocks(N, a.threads, [&](int n0, int n1) { dots(prep, cbuf.data(), n0, n1); });
      if (lut_sign) {
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < N; ++n)
            a.y[static_cast<size_t>(m) * N + n] += alpha[n] * static_cast<float>(cbuf[static_cast<size_t>(m) * N + n]);
        continue;
      }
      const int c = rq.qn + (1 << (q.bits - 1));
      const std::vector<int32_t> rs = (c != 0 || !q.symmetric) ? row_sums(w, N, K) : std::vector<int32_t>(N, 0);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          const int32_t qdot = cbuf[static_cast<size_t>(m) * N + n] + c * rs[n];
          const float val = q.step * static_cast<float>(qdot) + rq.offset * static_cast<float>(rs[n]);
          a.y[static_cast<size_t>(m) * N + n] += alpha[n] * val;
        }
      continue;
    }
    Planes p = quantize(a, q, quant_for(isa), a.threads);
    // Row sums only matter for integer codes (the sign mode's K - 2 * popcount needs none).
    const std::vector<int32_t> rs = q.mode == ActMode::kInt ? row_sums(w, N, K) : std::vector<int32_t>();
    cbuf.assign(static_cast<size_t>(M) * N, 0);
    CountArgs c{p.bits.data(), p.B, reinterpret_cast<const uint64_t*>(w), Wd, M, N, q.mode == ActMode::kSign, cbuf.data()};
    CountsFn fn = counts_for(isa);
    parallel_blocks(N, a.threads, [&](int n0, int n1) { fn(c, n0, n1); });
    for (int m = 0; m < M; ++m) {
      for (int n = 0; n < N; ++n) {
        const int32_t cnt = cbuf[static_cast<size_t>(m) * N + n];
        float val;
        if (q.mode == ActMode::kSign) {
          val = static_cast<float>(K - 2 * cnt);
        } else {
          // sum_k q_k s_k = sum_k u_k s_k + qn * rowsum = (usum - 2 * sum_{bit=1} u) + qn * rowsum
          const int32_t qdot = p.usum[m] - 2 * cnt + p.qn * rs[n];
          val = q.step * static_cast<float>(qdot) + p.offset * static_cast<float>(rs[n]);
        }
        a.y[static_cast<size_t>(m) * N + n] += alpha[n] * val;
      }
    }
  }
  if (a.bias)
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) a.y[static_cast<size_t>(m) * N + n] += a.bias[n];
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

Isa best_isa() {
#if defined(__aarch64__)
  return Isa::kNeon;
#elif defined(__x86_64__)
  return isa_supported(Isa::kAvx2) ? Isa::kAvx2 : Isa::kScalar;
#else
  return Isa::kScalar;
#endif
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
#if defined(__x86_64__)
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
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
    default: return "auto";
  }
}

}  // namespace bebert
