// Standalone test of the quantized attention kernel: every ISA path this CPU runs gives the scalar path's output
// bit for bit (the contract of attention.h), padded keys never change an output, and the result stays close to a
// naive double-precision evaluation of the definition (a probability on an LSQ boundary may move one level).
// Built natively and for aarch64 (qemu) by runtime/kernels/test_kernels.sh. Exit status 0 = all passed.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "attention.h"

using namespace bebert;

namespace {

int failures = 0;

// The definition in attention.h evaluated in double (exp, sums), codes as in the kernel.
std::vector<double> reference(const AttentionArgs& a) {
  const int L = a.L, D = a.head_dim, H = a.heads * D, qn = -(1 << (a.bits - 1)), qp = (1 << (a.bits - 1)) - 1;
  auto code = [&](float x, float s) { return std::fmin(std::fmax(std::nearbyint(x / s), float(qn)), float(qp)); };
  std::vector<double> out(static_cast<size_t>(a.B) * L * H);
  for (int b = 0; b < a.B; ++b) {
    std::vector<double> p(static_cast<size_t>(a.heads) * L * L);
    double pmin = 1;
    for (int h = 0; h < a.heads; ++h)
      for (int i = 0; i < L; ++i) {
        std::vector<double> s(L);
        double m = -1e300, sum = 0;
        for (int j = 0; j < L; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) {
            const size_t qi = (size_t(b) * L + i) * H + h * D + d, kj = (size_t(b) * L + j) * H + h * D + d;
            dot += code(a.q[qi], a.step_q) * code(a.k[kj], a.step_k);
          }
          s[j] = dot * a.step_q * a.step_k / std::sqrt(double(D)) + a.mask_add[size_t(b) * L + j];
          m = std::fmax(m, s[j]);
        }
        for (int j = 0; j < L; ++j) sum += std::exp(s[j] - m);
        for (int j = 0; j < L; ++j) {
          p[(size_t(h) * L + i) * L + j] = std::exp(s[j] - m) / sum;
          pmin = std::fmin(pmin, p[(size_t(h) * L + i) * L + j]);
        }
      }
    for (int h = 0; h < a.heads; ++h)
      for (int i = 0; i < L; ++i)
        for (int e = 0; e < D; ++e) {
          double acc = 0;
          for (int j = 0; j < L; ++j) {
            const double u = std::fmin(std::fmax(std::nearbyint((p[(size_t(h) * L + i) * L + j] - pmin) / a.step_p), 0.0),
                                       double((1 << a.bits) - 1));
            acc += (u * a.step_p + pmin) * code(a.v[(size_t(b) * L + j) * H + h * D + e], a.step_v) * a.step_v;
          }
          out[(size_t(b) * L + i) * H + h * D + e] = acc;
        }
  }
  return out;
}

void run_case(std::mt19937& rng, int B, int L, int heads, int D, int bits) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t n = static_cast<size_t>(B) * L * heads * D;
  std::vector<float> q(n), k(n), v(n), mask(static_cast<size_t>(B) * L, 0.0f);
  for (size_t i = 0; i < n; ++i) q[i] = nd(rng), k[i] = 1.3f * nd(rng), v[i] = 0.8f * nd(rng);
  if (B > 1)
    for (int j = L / 2; j < L; ++j) mask[L + j] = -10000.0f;  // padding in the second example
  AttentionArgs a;
  a.B = B; a.L = L; a.heads = heads; a.head_dim = D; a.bits = bits;
  a.q = q.data(); a.k = k.data(); a.v = v.data(); a.mask_add = mask.data();
  a.step_q = 0.3f; a.step_k = 0.35f; a.step_v = 0.25f; a.step_p = 0.02f;
  std::vector<float> base(n), out(n);
  a.out = base.data();
  a.threads = 1;
  quant_attention(a, Isa::kScalar);
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (!isa_supported(isa)) continue;
    a.out = out.data();
    a.threads = 2;
    quant_attention(a, isa);
    for (size_t i = 0; i < n; ++i)
      if (out[i] != base[i]) {
        std::printf("FAIL %s B=%d L=%d heads=%d D=%d: element %zu %g vs scalar %g\n", isa_name(isa), B, L, heads, D, i,
                    out[i], base[i]);
        ++failures;
        break;
      }
  }
  if (B > 1) {  // padded keys of example 1 get no weight
    std::vector<float> v2 = v;
    for (int j = L / 2; j < L; ++j)
      for (int c = 0; c < heads * D; ++c) v2[(size_t(L) + j) * heads * D + c] = 50.0f;
    a.v = v2.data();
    a.out = out.data();
    quant_attention(a);
    for (size_t i = 0; i < n; ++i)
      if (out[i] != base[i]) {
        std::printf("FAIL padded keys changed element %zu\n", i);
        ++failures;
        break;
      }
    a.v = v.data();
  }
  {  // Q, K, V as column ranges of one [B, L, 3H] tensor (a Q/K/V GEMM's output): the same bits on every ISA
    const int H = heads * D;
    std::vector<float> qkv(3 * n);
    for (size_t r = 0; r < n / H; ++r)
      for (int c = 0; c < H; ++c) {
        qkv[r * 3 * H + c] = q[r * H + c];
        qkv[r * 3 * H + H + c] = k[r * H + c];
        qkv[r * 3 * H + 2 * H + c] = v[r * H + c];
      }
    AttentionArgs p = a;
    p.q = qkv.data(); p.k = qkv.data() + H; p.v = qkv.data() + 2 * H; p.in_stride = 3 * H;
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
      if (!isa_supported(isa)) continue;
      std::fill(out.begin(), out.end(), NAN);
      p.out = out.data();
      quant_attention(p, isa);
      for (size_t i = 0; i < n; ++i)
        if (out[i] != base[i]) {
          std::printf("FAIL packed q/k/v %s B=%d L=%d: element %zu %g vs %g\n", isa_name(isa), B, L, i, out[i], base[i]);
          ++failures;
          break;
        }
    }
  }
  const std::vector<double> ref = reference(a);
  const double one_level = 0.02 * (1 << (bits - 1)) * 0.25;
  size_t off = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(base[i] - ref[i]);
    if (d > 2 * one_level) {
      std::printf("FAIL B=%d L=%d: element %zu %g vs reference %g\n", B, L, i, base[i], ref[i]);
      ++failures;
      break;
    }
    off += d > 1e-4;
  }
  if (off * 50 > n) {
    std::printf("FAIL B=%d L=%d: %zu of %zu elements differ from the reference by > 1e-4\n", B, L, off, n);
    ++failures;
  }
}

}  // namespace

int main() {
  std::mt19937 rng(11);
  const int cases[][5] = {{1, 1, 1, 1, 4}, {1, 7, 2, 8, 4}, {2, 37, 4, 16, 4}, {1, 64, 6, 32, 4}, {3, 17, 3, 64, 2},
                          {2, 20, 2, 8, 8}, {2, 33, 2, 20, 7},  // 7 bits: the largest AVX2 packs exactly
                          {1, 15, 2, 8, 4}, {1, 27, 6, 32, 4}};  // softmax rows shorter than a vector, a sentence's length
  for (auto& c : cases) run_case(rng, c[0], c[1], c[2], c[3], c[4]);
  std::printf("attention: %zu cases, %d failures (best isa: %s)\n", sizeof(cases) / sizeof(cases[0]), failures,
              isa_name(best_isa()));
  return failures ? 1 : 0;
}
