// AddLayerNorm against a double-precision reference of the formula in layernorm.h, for row lengths around the
// 16-lane blocks; one and several threads, every ISA path this CPU has and an output that aliases the input give
// the same bits.
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <vector>

#include "../bgemm/bgemm.h"
#include "layernorm.h"

using namespace bebert;

namespace {

int failures = 0;

void run_case(std::mt19937& rng, int rows, int cols, float scale) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> x(static_cast<size_t>(rows) * cols), r(x.size()), g(cols), b(cols), y1(x.size()), y2(x.size());
  for (auto& v : x) v = nd(rng) + 3.0f;  // an offset: the mean must be taken out before the variance
  for (auto& v : r) v = nd(rng);
  for (auto& v : g) v = 1.0f + 0.1f * nd(rng) / scale;
  for (auto& v : b) v = 0.1f * nd(rng) / scale;
  LayerNormArgs a;
  a.rows = rows; a.cols = cols; a.x = x.data(); a.residual = r.data(); a.gamma = g.data(); a.beta = b.data();
  a.eps = 1e-12f; a.y = y1.data(); a.threads = 1;
  add_layer_norm(a);
  a.y = y2.data(); a.threads = 2;
  add_layer_norm(a);
  double worst = 0;
  for (int i = 0; i < rows; ++i) {
    double mean = 0, var = 0;
    for (int j = 0; j < cols; ++j) mean += double(x[i * cols + j]) + double(r[i * cols + j]);
    mean /= cols;
    for (int j = 0; j < cols; ++j) {
      const double d = double(x[i * cols + j]) + double(r[i * cols + j]) - mean;
      var += d * d;
    }
    var /= cols;
    // float32 loses |mean| / std of the centred values' relative precision (s - mean cancels), as PyTorch's does
    const double tol = 4e-6 * (1.0 + std::fabs(mean) / std::sqrt(var + 1e-12));
    for (int j = 0; j < cols; ++j) {
      const double want = (double(x[i * cols + j]) + double(r[i * cols + j]) - mean) / std::sqrt(var + 1e-12) * g[j] + b[j];
      worst = std::fmax(worst, std::fabs(want - y1[i * cols + j]) / tol);
    }
  }
  bool same = y1 == y2;
  for (const char* isa : {"scalar", "avx2", "avx512", "neon"}) {  // every path this CPU has: the same bits
    Isa want;
    if (!parse_isa(isa, &want) || !isa_supported(want)) continue;
    setenv("BEBERT_ISA", isa, 1);
    a.y = y2.data(); a.threads = 1;
    add_layer_norm(a);
    same = same && y1 == y2;
  }
  unsetenv("BEBERT_ISA");
  std::vector<float> alias = x;  // y written over x
  a.x = alias.data(); a.y = alias.data(); a.threads = 1;
  add_layer_norm(a);
  same = same && alias == y1;
  if (worst > 1.0 || !same) {
    std::printf("FAIL rows=%d cols=%d: max |error| / tolerance %.3g, threads/ISAs/alias identical %d\n", rows, cols, worst, int(same));
    ++failures;
  }
}

}  // namespace

int main() {
  std::mt19937 rng(5);
  const int shapes[][2] = {{1, 1}, {1, 15}, {3, 16}, {2, 17}, {5, 31}, {128, 384}, {200, 768}, {7, 1000}};
  int cases = 0;
  for (auto& s : shapes)
    for (float scale : {0.01f, 1.0f, 30.0f}) {
      run_case(rng, s[0], s[1], scale);
      ++cases;
    }
  std::printf("layernorm: %d cases, %d failures\n", cases, failures);
  return failures ? 1 : 0;
}
