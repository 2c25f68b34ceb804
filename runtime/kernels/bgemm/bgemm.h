// Binary linear layer: Y[M, N] = sum_s Xhat_s[M, K] * (alpha_s[N] * sign(W_s[N, K]))^T + bias[N]
// with W_s in the packed layout of core/bitpack.h and Xhat_s the input as the split's activation
// quantizer sees it:
//   kFloat: Xhat = X (exact float arithmetic on +-1 weights);
//   kInt:   LSQ quantizer of `bits` bits. symmetric: q = clamp(nearbyint(x / step), -2^(b-1), 2^(b-1)-1),
//           Xhat = step * q; asymmetric: m = min(X) over the whole [M, K] input of one call,
//           q = clamp(nearbyint((x - m) / step), 0, 2^b - 1), Xhat = step * q + m;
//   kSign:  Xhat = sign(X) with sign(0) = +1 (BiBERT's 1-bit activations).
// Integer modes compute sum_k q_k * sign(w_k) exactly with bit-serial popcounts, so every ISA path gives
// bit-identical outputs; the float mode is exact up to float summation order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bebert {

enum class ActMode : int { kFloat = 0, kInt = 1, kSign = 2 };

struct ActQuant {
  ActMode mode = ActMode::kFloat;
  int bits = 32;
  bool symmetric = true;
  float step = 1.0f;
};

enum class Isa : int { kAuto = 0, kScalar = 1, kAvx2 = 2, kNeon = 3 };

struct BinaryLinearArgs {
  int M = 0, N = 0, K = 0, S = 1;
  const float* x = nullptr;        // [M, K]
  const uint8_t* w = nullptr;      // [S, N, row_bytes(K)]
  const float* alpha = nullptr;    // [S, N]
  const float* bias = nullptr;     // [N] or nullptr
  const ActQuant* act = nullptr;   // [S]
  float* y = nullptr;              // [M, N]
  int threads = 1;
};

// Returns an empty string on success, else a one-line description of the invalid argument.
std::string validate(const BinaryLinearArgs& a);
// Runs the layer on the requested ISA (kAuto = best available). Arguments must pass validate().
void binary_linear(const BinaryLinearArgs& a, Isa isa = Isa::kAuto);
// The same for X holding `examples` examples of M / examples rows each: an asymmetric activation quantizer then
// takes its minimum per example (as the PyTorch model does), so no example's output depends on its batch.
void binary_linear_examples(const BinaryLinearArgs& a, int examples, Isa isa = Isa::kAuto);

Isa best_isa();
bool isa_supported(Isa isa);
const char* isa_name(Isa isa);

// --- internal: per-ISA hot loops (bgemm_<isa>.cc) -------------------------------------------------------
// counts[m * N * B + n * B + j] = popcount(op(planes[m][j][:], w[n][:])) over Wd words, op = AND or XOR,
// for rows n in [n0, n1).
struct CountArgs {
  const uint64_t* planes; int B; const uint64_t* w; int Wd; int M; int N; bool use_xor; int32_t* counts;
};
void counts_scalar(const CountArgs& c, int n0, int n1);
void counts_avx2(const CountArgs& c, int n0, int n1);
void counts_neon(const CountArgs& c, int n0, int n1);
// Quantizes one activation row x[K] into bit planes (zeroed on entry): kSign -> plane 0 = (x < 0);
// kInt -> planes j of u = clamp(nearbyint((x - offset) / step), qn, qp) - qn; returns sum of u (0 for kSign).
struct RowQuant { ActMode mode; int B; int qn; int qp; float step; float offset; };
int32_t quantize_row_scalar(const float* x, int K, const RowQuant& q, uint64_t* planes);
int32_t quantize_row_avx2(const float* x, int K, const RowQuant& q, uint64_t* planes);
// Table-lookup path for 2..4-bit activations (T-MAC style, x86 pshufb): dots[m * N + n] = sum_k v_k * sign_n(k)
// with v = u - 2^(bits-1) the centred code of x (so |table entry| <= 32 fits int8). Prepared once per call:
struct LutPrep {
  int M = 0, N = 0, RB = 0;       // RB = row_bytes(K); groups of 4 weights = 2 * RB
  std::vector<int8_t> tables;     // [M][2 * RB][16]
  std::vector<uint8_t> wt;        // [ceil(N / 32)][RB][32]: byte p of 32 consecutive rows
};
void lut_prepare_avx2(const float* x, int M, int K, const RowQuant& q, const uint8_t* w, int N, LutPrep& prep, int threads);
void lut_dots_avx2(const LutPrep& prep, int32_t* dots, int n0, int n1);
void lut_prepare_neon(const float* x, int M, int K, const RowQuant& q, const uint8_t* w, int N, LutPrep& prep, int threads);
void lut_dots_neon(const LutPrep& prep, int32_t* dots, int n0, int n1);
// y[m * N + n] = sum_k x[m * K + k] * sign_n(k), rows n in [n0, n1) (no scale, no bias).
void float_dots_scalar(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1);
void float_dots_avx2(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1);
void float_dots_neon(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1);

}  // namespace bebert
