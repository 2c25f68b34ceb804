// Kernel-level companion of scripts/arm_count.py, built for aarch64 and run under qemu-aarch64:
//   kernel_count check                 NEON vs scalar, bit for bit, at MiniLM-like shapes (M = 128 tokens and odd
//                                      sizes; the kernel unit test covers small shapes only); exit 1 on a mismatch
//   kernel_count run M N K S REPS      REPS calls of binary_linear (int4 symmetric activations, S TWS halves
//                                      with one quantizer, one thread) for the instruction-count plugin: the
//                                      difference of REPS = 2 and REPS = 1 is one call, preparation included
// Only the public entry points of bgemm.h are used, so it builds against any tree that has them.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "bgemm/bgemm.h"
#include "core/bitpack.h"

using namespace bebert;

namespace {

struct Case {
  std::vector<float> x, alpha, bias, y;
  std::vector<uint8_t> w;
  std::vector<ActQuant> act;
  BinaryLinearArgs a;
};

void make(Case& c, int M, int N, int K, int S, ActQuant q, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  c.x.resize(static_cast<size_t>(M) * K);
  for (auto& v : c.x) v = 3.0f * nd(rng);  // wide enough to hit the clip at both ends
  c.alpha.resize(static_cast<size_t>(S) * N);
  for (auto& v : c.alpha) v = 0.1f + std::abs(nd(rng));
  c.bias.resize(N);
  for (auto& v : c.bias) v = nd(rng);
  c.w.resize(static_cast<size_t>(S) * N * row_bytes(K));
  for (auto& v : c.w) v = static_cast<uint8_t>(rng());
  for (int s = 0; s < S; ++s)  // padding bits past K stay zero, as the packer writes them
    for (int n = 0; n < N; ++n)
      for (int k = K; k < row_bytes(K) * 8; ++k)
        c.w[(static_cast<size_t>(s) * N + n) * row_bytes(K) + k / 8] &= static_cast<uint8_t>(~(1u << (k % 8)));
  c.act.assign(S, q);
  c.y.assign(static_cast<size_t>(M) * N, 0.0f);
  c.a = BinaryLinearArgs();
  c.a.M = M; c.a.N = N; c.a.K = K; c.a.S = S; c.a.x = c.x.data(); c.a.w = c.w.data(); c.a.alpha = c.alpha.data();
  c.a.bias = c.bias.data(); c.a.act = c.act.data(); c.a.y = c.y.data(); c.a.threads = 1;
}

int check() {
  const int shapes[][3] = {{128, 192, 384}, {128, 384, 192}, {128, 768, 384}, {128, 384, 768},
                           {37, 100, 1000}, {17, 64, 200},  {16, 32, 64},    {64, 300, 2049}};
  const ActQuant modes[] = {{ActMode::kSign, 1, true, 1.0f},   {ActMode::kInt, 4, true, 0.37f},
                            {ActMode::kInt, 4, false, 0.37f},  {ActMode::kInt, 2, true, 0.9f},
                            {ActMode::kInt, 3, false, 0.5f}};
  int cases = 0, bad = 0;
  unsigned seed = 1;
  for (auto& sh : shapes)
    for (const ActQuant& q : modes)
      for (int S : {1, 2}) {
        Case c;
        make(c, sh[0], sh[1], sh[2], S, q, seed++);
        c.a.threads = 1 + cases % 2;
        binary_linear(c.a, Isa::kScalar);
        const std::vector<float> ref = c.y;
        binary_linear(c.a, Isa::kNeon);
        ++cases;
        if (std::memcmp(ref.data(), c.y.data(), ref.size() * sizeof(float)) != 0) {
          std::printf("MISMATCH M=%d N=%d K=%d S=%d mode=%d bits=%d sym=%d\n", sh[0], sh[1], sh[2], S, int(q.mode),
                      q.bits, int(q.symmetric));
          ++bad;
        }
      }
  std::printf("%d cases, %d mismatches (neon vs scalar, bit for bit)\n", cases, bad);
  return bad ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "check") == 0) return check();
  if (argc == 7 && std::strcmp(argv[1], "run") == 0) {
    const int M = std::atoi(argv[2]), N = std::atoi(argv[3]), K = std::atoi(argv[4]), S = std::atoi(argv[5]),
              reps = std::atoi(argv[6]);
    Case c;
    make(c, M, N, K, S, ActQuant{ActMode::kInt, 4, true, 0.37f}, 7);
    for (int r = 0; r < reps; ++r) binary_linear(c.a, Isa::kNeon);
    double sum = 0;
    for (float v : c.y) sum += v;
    std::printf("checksum %.6e\n", sum);
    return 0;
  }
  std::fprintf(stderr, "usage: %s check | run M N K S REPS\n", argv[0]);
  return 2;
}
