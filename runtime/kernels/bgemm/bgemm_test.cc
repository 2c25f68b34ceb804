// Standalone test of the binary linear kernels against a naive reference written from the definitions in
// bgemm.h (unpacked signs, double arithmetic). Built natively and cross-built for aarch64 (run under
// qemu-aarch64) by runtime/kernels/test_kernels.sh. Exit status 0 = all passed.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

#include "../core/bitpack.h"
#include "bgemm.h"

using namespace bebert;

// Counts every heap allocation of the process, so the test can check that a warmed-up call allocates nothing.
// (GCC 12 flags free() of memory from the replaced operator new as mismatched: both sides use malloc/free here.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
std::atomic<long> g_allocations{0};
void* operator new(size_t n) {
  g_allocations++;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace {

int failures = 0;
const Isa kIsas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon};

double ref_act(float x, const ActQuant& q, float offset) {
  if (q.mode == ActMode::kFloat) return x;
  if (q.mode == ActMode::kSign) return x < 0 ? -1.0 : 1.0;
  const int qn = q.symmetric ? -(1 << (q.bits - 1)) : 0;
  const int qp = q.symmetric ? (1 << (q.bits - 1)) - 1 : (1 << q.bits) - 1;
  float v = std::nearbyint((x - offset) / q.step);
  v = std::fmin(std::fmax(v, float(qn)), float(qp));
  return double(q.step) * v + offset;
}

void reference(const BinaryLinearArgs& a, std::vector<double>& y) {
  y.assign(size_t(a.M) * a.N, 0.0);
  const int rb = row_bytes(a.K);
  for (int s = 0; s < a.S; ++s) {
    float offset = 0.0f;
    if (a.act[s].mode == ActMode::kInt && !a.act[s].symmetric) {
      offset = a.x[0];
      for (size_t i = 0; i < size_t(a.M) * a.K; ++i) offset = std::fmin(offset, a.x[i]);
    }
    for (int m = 0; m < a.M; ++m)
      for (int n = 0; n < a.N; ++n) {
        const uint8_t* row = a.w + (size_t(s) * a.N + n) * rb;
        double acc = 0;
        for (int k = 0; k < a.K; ++k) acc += ref_act(a.x[size_t(m) * a.K + k], a.act[s], offset) * packed_sign(row, k);
        y[size_t(m) * a.N + n] += a.alpha[size_t(s) * a.N + n] * acc;
      }
  }
  if (a.bias)
    for (int m = 0; m < a.M; ++m)
      for (int n = 0; n < a.N; ++n) y[size_t(m) * a.N + n] += a.bias[n];
}

void run_case(std::mt19937& rng, int M, int N, int K, int S, ActQuant q, int fill, int threads) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(size_t(M) * K), alpha(size_t(S) * N), bias(N), y(size_t(M) * N), y0(size_t(M) * N);
  std::vector<uint8_t> w(size_t(S) * N * row_bytes(K), 0);
  for (auto& v : x) v = 3.0f * nd(rng);  // wide enough to hit the clip at both ends
  for (auto& v : alpha) v = 0.1f + std::fabs(nd(rng));
  for (auto& v : bias) v = nd(rng);
  for (int s = 0; s < S; ++s)
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) {
        const bool neg = fill == 1 ? true : fill == 2 ? false : (rng() & 1);
        if (neg) w[(size_t(s) * N + n) * row_bytes(K) + k / 8] |= uint8_t(1u << (k % 8));
      }
  std::vector<ActQuant> act(S, q);
  BinaryLinearArgs a;
  a.M = M; a.N = N; a.K = K; a.S = S; a.x = x.data(); a.w = w.data(); a.alpha = alpha.data();
  a.bias = bias.data(); a.act = act.data(); a.y = y.data(); a.threads = threads;
  if (!validate(a).empty()) { std::printf("FAIL validate: %s\n", validate(a).c_str()); ++failures; return; }
  std::vector<double> ref;
  reference(a, ref);
  bool first = true;
  for (Isa isa : kIsas) {
    if (!isa_supported(isa)) continue;
    binary_linear(a, isa);
    double worst = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      const double err = std::fabs(y[i] - ref[i]) / (1.0 + std::fabs(ref[i]));
      worst = std::fmax(worst, err);
    }
    const bool ints = q.mode != ActMode::kFloat;
    bool same = true;
    if (first) y0 = y; else for (size_t i = 0; i < y.size(); ++i) same &= (y[i] == y0[i]);
    first = false;
    const double tol = 1e-5 * std::sqrt(double(K));
    if (worst > tol || (ints && !same)) {
      std::printf("FAIL isa=%s M=%d N=%d K=%d S=%d mode=%d bits=%d sym=%d fill=%d: rel err %.3g, identical=%d\n",
                  isa_name(isa), M, N, K, S, int(q.mode), q.bits, int(q.symmetric), fill, worst, int(same));
      ++failures;
    }
  }
}

// binary_linear_pair (halves in separate buffers, one shared quantizer) must equal binary_linear with S = 2 and
// act[0] == act[1] bit for bit in integer modes, on every ISA, for 1 and several examples.
void run_pair_case(std::mt19937& rng, int M, int N, int K, ActQuant q, int threads, int examples) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(size_t(M) * K), alpha(size_t(2) * N), bias(N), y(size_t(M) * N), yp(size_t(M) * N);
  const int rb = row_bytes(K);
  std::vector<uint8_t> w(size_t(2) * N * rb, 0);
  for (auto& v : x) v = 3.0f * nd(rng);
  for (auto& v : alpha) v = 0.1f + std::fabs(nd(rng));
  for (auto& v : bias) v = nd(rng);
  for (int s = 0; s < 2; ++s)
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k)
        if (rng() & 1) w[(size_t(s) * N + n) * rb + k / 8] |= uint8_t(1u << (k % 8));
  std::vector<uint8_t> w1(w.begin() + size_t(N) * rb, w.end());  // the second half in a buffer of its own
  ActQuant act[2] = {q, q};
  BinaryLinearArgs a;
  a.M = M; a.N = N; a.K = K; a.S = 2; a.x = x.data(); a.w = w.data(); a.alpha = alpha.data();
  a.bias = bias.data(); a.act = act; a.y = y.data(); a.threads = threads;
  BinaryPairArgs p;
  p.M = M; p.N = N; p.K = K; p.x = x.data(); p.w[0] = w.data(); p.w[1] = w1.data(); p.alpha[0] = alpha.data();
  p.alpha[1] = alpha.data() + N; p.bias = bias.data(); p.act = q; p.y = yp.data(); p.threads = threads;
  p.examples = examples;
  if (!validate_pair(p).empty()) { std::printf("FAIL validate_pair: %s\n", validate_pair(p).c_str()); ++failures; return; }
  std::vector<float> first;
  for (Isa isa : kIsas) {
    if (!isa_supported(isa)) continue;
    binary_linear_examples(a, examples, isa);
    binary_linear_pair(p, isa);
    if (first.empty()) first = y;
    bool same = true;
    for (size_t i = 0; i < y.size(); ++i) same &= (y[i] == yp[i]) && (y[i] == first[i]);
    if (!same) {
      std::printf("FAIL pair isa=%s M=%d N=%d K=%d mode=%d bits=%d sym=%d examples=%d\n", isa_name(isa), M, N, K,
                  int(q.mode), q.bits, int(q.symmetric), examples);
      ++failures;
    }
  }
}

// Per-call overhead: once a layer has run (weights arranged and cached, per-thread buffers grown), further calls
// allocate nothing, on every ISA and mode. One thread: with two, a pool thread that happened to take no task
// during the warm-up grows its own buffers on a later call, once.
void check_no_allocation_per_call(std::mt19937& rng) {
  const int M = 37, N = 200, K = 300;
  std::vector<float> x(size_t(M) * K), y(size_t(M) * N), alpha(2 * N, 1.0f), bias(N, 0.5f);
  for (auto& v : x) v = float(int(rng() % 200) - 100) / 30.0f;
  std::vector<uint8_t> w(size_t(2) * N * row_bytes(K));
  for (auto& v : w) v = uint8_t(rng());
  const ActQuant modes[][2] = {{{ActMode::kInt, 4, true, 0.3f}, {ActMode::kInt, 4, true, 0.31f}},
                               {{ActMode::kInt, 4, false, 0.3f}, {ActMode::kInt, 4, false, 0.3f}},
                               {{ActMode::kSign, 1, true, 1.0f}, {ActMode::kSign, 1, true, 1.0f}},
                               {{ActMode::kInt, 8, true, 0.1f}, {ActMode::kInt, 8, true, 0.1f}},
                               {{ActMode::kFloat, 32, true, 1.0f}, {ActMode::kFloat, 32, true, 1.0f}}};
  for (Isa isa : kIsas) {
    if (!isa_supported(isa)) continue;
    for (int threads : {1})
      for (const auto& q : modes) {
        BinaryLinearArgs a;
        a.M = M; a.N = N; a.K = K; a.S = 2; a.x = x.data(); a.w = w.data(); a.alpha = alpha.data();
        a.bias = bias.data(); a.act = q; a.y = y.data(); a.threads = threads;
        for (int i = 0; i < 3; ++i) binary_linear(a, isa);
        const long before = g_allocations.load();
        for (int i = 0; i < 5; ++i) binary_linear(a, isa);
        const long n = g_allocations.load() - before;
        if (n != 0) {
          std::printf("FAIL allocation: isa=%s threads=%d mode=%d bits=%d: %ld allocations in 5 calls\n", isa_name(isa),
                      threads, int(q[0].mode), q[0].bits, n);
          ++failures;
        }
      }
  }
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  const int shapes[][3] = {{1, 1, 1}, {1, 5, 7}, {3, 9, 63}, {2, 17, 64}, {5, 33, 65}, {4, 70, 255},
                           {7, 64, 256}, {2, 130, 384}, {1, 8, 1000}, {3, 12, 2049}};
  std::vector<ActQuant> modes;
  modes.push_back({ActMode::kFloat, 32, true, 1.0f});
  modes.push_back({ActMode::kSign, 1, true, 1.0f});
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false}) modes.push_back({ActMode::kInt, bits, sym, 0.37f});
  int cases = 0;
  for (auto& s : shapes)
    for (auto& q : modes)
      for (int S : {1, 2})
        for (int fill : {0, 1, 2}) {
          if (fill && (S == 2 || s[2] > 300)) continue;
          run_case(rng, s[0], s[1], s[2], S, q, fill, 1 + (cases % 2));
          ++cases;
        }
  const int pair_shapes[][3] = {{1, 7, 65}, {4, 70, 255}, {9, 130, 777}, {16, 64, 384}, {20, 200, 1000}};
  for (auto& s : pair_shapes)
    for (auto& q : modes) {
      if (q.mode == ActMode::kFloat) continue;
      for (int examples : {1, 2}) {
        if (s[0] % examples) continue;
        run_pair_case(rng, s[0], s[1], s[2], q, 1 + (cases % 2), examples);
        ++cases;
      }
    }
  check_no_allocation_per_call(rng);
  std::printf("%d cases, %d failures (best isa: %s)\n", cases, failures, isa_name(best_isa()));
  return failures ? 1 : 0;
}
