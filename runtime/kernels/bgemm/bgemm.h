// Binary linear layer: Y[M, N] = sum_s Xhat_s[M, K] * (alpha_s[N] * sign(W_s[N, K]))^T + bias[N]
// with W_s in the packed layout of core/bitpack.h and Xhat_s the input as the split's activation
// quantizer sees it:
//   kFloat: Xhat = X (exact float arithmetic on +-1 weights);
//   kInt:   LSQ quantizer of `bits` bits. symmetric: q = clamp(nearbyint(x / step), -2^(b-1), 2^(b-1)-1),
//           Xhat = step * q; asymmetric: m = min(X) over the whole [M, K] input of one call,
//           q = clamp(nearbyint((x - m) / step), 0, 2^b - 1), Xhat = step * q + m;
//   kSign:  Xhat = sign(X) with sign(0) = +1 (BiBERT's 1-bit activations).
// With `relu`, Y = max(Y, 0) afterwards (the FFN's ReLU fused: applied to each output tile while it is in L1).
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

// kAvx512 needs AVX-512 F/BW/VL/VBMI/VNNI (VPOPCNTDQ for its popcount path), checked at run time.
enum class Isa : int { kAuto = 0, kScalar = 1, kAvx2 = 2, kNeon = 3, kAvx512 = 4 };

struct BinaryLinearArgs {
  int M = 0, N = 0, K = 0, S = 1;
  const float* x = nullptr;        // [M, K]
  const uint8_t* w = nullptr;      // [S, N, row_bytes(K)]
  const float* alpha = nullptr;    // [S, N]
  const float* bias = nullptr;     // [N] or nullptr
  const ActQuant* act = nullptr;   // [S]
  float* y = nullptr;              // [M, N]
  int threads = 1;
  bool relu = false;               // y = max(y, 0) after the bias
};

// Returns an empty string on success, else a one-line description of the invalid argument.
std::string validate(const BinaryLinearArgs& a);
// Runs the layer on the requested ISA (kAuto = best available). Arguments must pass validate().
void binary_linear(const BinaryLinearArgs& a, Isa isa = Isa::kAuto);
// The same for X holding `examples` examples of M / examples rows each: an asymmetric activation quantizer then
// takes its minimum per example (as the PyTorch model does), so no example's output depends on its batch.
void binary_linear_examples(const BinaryLinearArgs& a, int examples, Isa isa = Isa::kAuto);

// One TWS slot whose two binary halves share ONE input quantizer (same mode, bits, symmetry and step), with the
// halves in separate buffers (as two exported ops hold them today): the tables are built once and serve both
// halves, y = act(x) @ (alpha0 * sign(W0) + alpha1 * sign(W1))^T + bias, bit-identical to binary_linear with S = 2
// and act[0] == act[1] in integer modes. `examples` as in binary_linear_examples.
// A tied slot (one quantizer and alpha0 == alpha1: exactly ternary alpha * (s1 + s2)) is this call too. No separate
// ternary kernel: on AVX-512 a 3-weight ternary table (27 entries) needs 32-byte slots, so only 2 groups fit one
// vpermb table and vpdpbusd's 4-byte sums would mix rows; accumulating it costs as many instructions per ternary
// weight as the two binary lookups here.
struct BinaryPairArgs {
  int M = 0, N = 0, K = 0;
  const float* x = nullptr;                   // [M, K]
  const uint8_t* w[2] = {nullptr, nullptr};   // each [N, row_bytes(K)]
  const float* alpha[2] = {nullptr, nullptr}; // each [N]
  const float* bias = nullptr;                // [N] or nullptr
  ActQuant act;                               // the shared input quantizer
  float* y = nullptr;                         // [M, N]
  int threads = 1;
  int examples = 1;
  bool relu = false;                          // y = max(y, 0) after the bias
};
std::string validate_pair(const BinaryPairArgs& a);
void binary_linear_pair(const BinaryPairArgs& a, Isa isa = Isa::kAuto);

// The ISA that kAuto runs: $BEBERT_ISA (scalar, avx2, avx512, neon) when set and supported by this CPU (so tests
// and benchmarks can force every path the machine has), else the best one the CPU supports.
Isa best_isa();
bool isa_supported(Isa isa);
const char* isa_name(Isa isa);
// Parses "auto", "scalar", "avx2", "avx512", "neon"; returns false for anything else.
bool parse_isa(const char* name, Isa* out);

// Weights are arranged for each ISA's kernel (and their row sums counted) once per weight buffer and kept in a
// process-wide cache keyed by the buffer's address, size and a fingerprint of its contents, so that ops whose
// weights are constants (ONNX Runtime initializers, TFLite buffers) pay it on the first call only. A caller that
// rewrites a weight buffer in place between calls must call this first (the fingerprint samples the buffer; it
// does not read every byte on every call).
void clear_prepared_weights();

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
// Table-lookup path for 2..4-bit and sign activations (T-MAC style; x86 pshufb, ARM tbl):
// dots[m * N + n] = sum_k v_k * sign_n(k) with v = u - 2^(bits-1) the centred code of x (so |table entry| <= 32
// fits int8), or v = sign(x). The driver owns every buffer: the weights are arranged once per weight buffer
// (lut_arrange_rows32 in lut_prepare.h, cached), the tables are built per call into reused per-thread buffers by
// lut_row_tables_<isa> (one token row: tables[2 * RB][16], RB = row_bytes(K); no allocation per call or token).
struct LutPrep {
  int M = 0, N = 0, RB = 0;          // RB = row_bytes(K); groups of 4 weights = 2 * RB
  const int8_t* tables = nullptr;    // [M][2 * RB][16]
  const uint8_t* wt = nullptr;       // [ceil(N / 32)][RB][32]: byte p of 32 consecutive rows
};
// AVX2 (bgemm_avx2.cc) builds OFFSET SUBSET-SUM tables, U[i] = 32 + sum_{r: bit r of i} v_r (T = P + 64 - 2U),
// so that four lookups add in unsigned bytes; lut_token_consts_avx2 gives each token's constant
// C = sum_g (U_g[15] + 32) that turns them into the same dots (dot = C - 2 sum U). lut_gemm_avx2 runs the lookups
// over the lut_arrange_rows32 layout and the epilogue in registers, parts in order, then the bias (as
// lut_gemm_avx512): y[m * N + n] for m < mc, n in [n0, n1), n0 a multiple of 32.
// One part of a call for the x86 table-lookup kernels (AVX2 and AVX-512). Part s of a call:
// y = sum_s alpha_s * val_s + bias, with val_s = float(dot) for sign activations,
// step_s * float(dot + c_s * rowsum) + offset_s * float(rowsum) else.
struct LutPart {
  const int8_t* tables;   // [mc][2 * RB][16], tokens of this task; parts with one quantizer share the pointer
  const uint8_t* wt;      // the ISA's layout: lut_arrange_rows32 (AVX2), lut_arrange_quads64 (AVX-512)
  const int32_t* rowsum;  // [N rounded up to 64]
  const float* alpha;     // [N]
  float step, offset;
  int c;
  bool sign;
  const int32_t* tconst;  // AVX2: [mc] the tokens' table constants (lut_token_consts_avx2); AVX-512: unused
};
void lut_row_tables_avx2(const float* x, int K, const RowQuant& q, int8_t* tables);
void lut_token_consts_avx2(const int8_t* tables, int M, int G, int32_t* out);
void lut_gemm_avx2(const LutPart* parts, int S, int mc, int N, int RB, int n0, int n1, const float* bias, float* y);
void lut_row_tables_neon(const float* x, int K, const RowQuant& q, int8_t* tables);
void lut_dots_neon(const LutPrep& prep, int32_t* dots, int n0, int n1);
// AVX-512 (bgemm_avx512.cc; VBMI + VNNI): one 64-byte vpermb table holds the 16-entry tables of 4 consecutive
// weight groups (the tables of lut_row_tables_*, in the same [2 * RB][16] order), and the weights are arranged
// once (lut_arrange_quads64) so that a 64-byte vector holds, for 16 rows, the 4 group indices (group id in bits
// 4..5) in the 4 bytes of a 32-bit lane: vpermb looks up 16 rows x 4 groups and vpdpbusd(ones) adds each row's 4
// int8 results into its int32 lane, no widening (parts: LutPart above).
void lut_row_tables_avx512(const float* x, int K, const RowQuant& q, int8_t* tables);
// y[m * N + n] for m < mc and n in [n0, n1), n0 a multiple of 64; S parts in order, then the bias.
void lut_gemm_avx512(const LutPart* parts, int S, int mc, int N, int RB, int n0, int n1, const float* bias, float* y);
void counts_avx512(const CountArgs& c, int n0, int n1);  // VPOPCNTDQ, one horizontal sum per output
// Sign activations (W1A1) with VPOPCNTQ: 8 weight rows in the 8 qword lanes (lut_arrange_words8), a broadcast
// 64-bit activation word per step, popcount(a XOR w) accumulated per lane, so no per-output horizontal sums.
// planes[m * Wd + i]: sign bits of token m. y[m * N + n] for m < mc, n in [n0, n1) (n0 a multiple of 8):
// y = sum_s alpha_s[n] * float(K - 2 * popcount_s) + bias[n], parts in order.
struct Avx512SignPart {
  const uint64_t* wt;     // lut_arrange_words8 layout
  const float* alpha;     // [N]
};
void sign_gemm_avx512(const Avx512SignPart* parts, int S, const uint64_t* planes, int mc, int N, int K, int n0, int n1,
                      const float* bias, float* y);
// y[m * N + n] = sum_k x[m * K + k] * sign_n(k), rows n in [n0, n1) (no scale, no bias).
void float_dots_scalar(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1);
void float_dots_avx2(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1);
void float_dots_neon(const float* x, int M, int K, const uint8_t* w, int N, float* y, int n0, int n1);

}  // namespace bebert
