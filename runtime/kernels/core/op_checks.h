// The argument checks of the custom ops (binary linear, binary embedding, quantized attention), written once for every glue layer
// that runs them: the ONNX Runtime op library (kernels/ort/ort_ops.cc), the LiteRT op library
// (kernels/litert/litert_ops.cc), the Python binding (kernels/python/module.cc) and the fuzz target
// (kernels/fuzz/op_fuzz.cc). The contract they enforce is runtime/OPS.md.
//
// A glue layer describes each input as a Tensor view (element type, dims, data) and calls check_linear /
// check_embedding before it allocates or touches the output. Everything a corrupt or hand-edited model file can
// get wrong is refused here with a one-line message: ranks, shapes that disagree between inputs, attributes outside
// their domain, NaN / inf in the constants or the activations, token ids out of range, sizes whose element counts
// overflow. What passes is safe to hand to bebert::binary_linear / bebert::binary_embedding (the fuzz target
// checks exactly that under AddressSanitizer and UndefinedBehaviorSanitizer).
#pragma once
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../attention/attention.h"
#include "../bembed/bembed.h"
#include "../bgemm/bgemm.h"
#include "../layernorm/layernorm.h"
#include "bitpack.h"

namespace bebert {
namespace ops {

enum class DType : int { kOther = 0, kF32, kU8, kI32, kI64 };

// One op input as a runtime hands it over. data may be null only for an absent optional input.
struct Tensor {
  DType type = DType::kOther;
  std::vector<int64_t> dims;
  const void* data = nullptr;
};

// Product of dims, or -1 when a dim is negative or the product exceeds int32 range (the kernels index with
// int; no tensor of a BERT-sized model comes near 2^31 elements).
inline int64_t element_count(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0 || (d > 0 && n > INT32_MAX / d)) return -1;
    n *= d;
  }
  return n;
}

inline std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// True when no element of p[0..n) is NaN or +-inf (core/finite.cc).
bool all_finite(const float* p, int64_t n);

// ---- binary linear ----------------------------------------------------------------------------------------------
// Attributes as the model file states them (int64 in ONNX, int32 in the TFLite params tensor).
struct ActAttrs {
  int64_t mode = 0;       // 0 float, 1 int (LSQ), 2 sign
  int64_t bits = 32;      // 32 for float, 2..8 for int, 1 for sign
  int64_t symmetric = 1;  // 0 or 1 (only int mode reads it)
  int64_t relu = 0;       // 1: y = max(y, 0), the following ReLU fused into the op (absent in older files: 0)
};

inline std::string check_act_attrs(const ActAttrs& a) {
  if (a.mode < 0 || a.mode > 2) return "act_mode must be 0 (float), 1 (int) or 2 (sign), got " + std::to_string(a.mode);
  if (a.symmetric != 0 && a.symmetric != 1) return "act_symmetric must be 0 or 1, got " + std::to_string(a.symmetric);
  if (a.mode == 0 && a.bits != 32) return "act_bits must be 32 for float activations, got " + std::to_string(a.bits);
  if (a.mode == 1 && (a.bits < 2 || a.bits > 8))
    return "integer activations need 2..8 bits, got act_bits " + std::to_string(a.bits);
  if (a.mode == 2 && a.bits != 1) return "act_bits must be 1 for sign activations, got " + std::to_string(a.bits);
  if (a.relu != 0 && a.relu != 1) return "relu must be 0 or 1, got " + std::to_string(a.relu);
  return "";
}

// What a checked linear call will compute: y [..., N] = x [..., K] (M rows, `examples` leading rows) against
// S packed halves.
struct LinearPlan {
  int M = 0, N = 0, K = 0, S = 0, examples = 1;
  bool relu = false;
  std::vector<ActQuant> act;     // [S]
  std::vector<int64_t> out_dims; // x's dims with the last replaced by N
};

// x float [..., K]; w uint8 [S, N, row_bytes(K)] with S in {1, 2}; alpha float [S, N]; bias float [N] (data may be
// null: no bias); steps float [S]; attrs in their domain; every float constant and x finite. On success fills plan.
inline std::string check_linear(const Tensor& x, const Tensor& w, const Tensor& alpha, const Tensor& bias,
                                const Tensor& steps, const ActAttrs& attrs, LinearPlan* plan) {
  std::string e = check_act_attrs(attrs);
  if (!e.empty()) return e;
  if (x.type != DType::kF32 || x.dims.empty()) return "x must be float32 of rank >= 1, got rank " + std::to_string(x.dims.size());
  if (w.type != DType::kU8 || w.dims.size() != 3) return "w must be uint8 [S, N, row_bytes(K)], got " + dims_str(w.dims);
  const int64_t nx = element_count(x.dims), nw = element_count(w.dims);
  if (nx < 0 || nw < 0) return "x " + dims_str(x.dims) + " or w " + dims_str(w.dims) + " is too large or has a negative dim";
  const int64_t K = x.dims.back(), S = w.dims[0], N = w.dims[1];
  if (K < 1) return "x must have a positive last dim K, got " + dims_str(x.dims);
  if (S < 1 || S > 2) return "w must hold S = 1 or 2 parts, got w " + dims_str(w.dims);
  if (N < 1) return "w must have N >= 1 rows, got w " + dims_str(w.dims);
  if (w.dims[2] != row_bytes(static_cast<int>(K)))
    return "shape mismatch: w rows have " + std::to_string(w.dims[2]) + " bytes, expected " + std::to_string(row_bytes(static_cast<int>(K))) +
           " for K=" + std::to_string(K);
  const std::vector<int64_t> want_alpha{S, N}, want_bias{N}, want_steps{S};
  if (alpha.type != DType::kF32 || alpha.dims != want_alpha)
    return "shape mismatch: alpha must be float32 [S, N] = " + dims_str(want_alpha) + ", got " + dims_str(alpha.dims);
  if (bias.data && (bias.type != DType::kF32 || bias.dims != want_bias))
    return "shape mismatch: bias must be float32 [N] = " + dims_str(want_bias) + ", got " + dims_str(bias.dims);
  if (steps.type != DType::kF32 || steps.dims != want_steps)
    return "shape mismatch: steps must be float32 [S] = " + dims_str(want_steps) + ", got " + dims_str(steps.dims);
  const int64_t M = nx / K;
  if (M * N > INT32_MAX) return "output [" + std::to_string(M) + ", " + std::to_string(N) + "] is too large";
  if (!x.data || !w.data || !alpha.data || !steps.data) return "an input has no data";
  const auto* st = static_cast<const float*>(steps.data);
  if (!all_finite(st, S)) return "steps holds NaN or inf";
  if (!all_finite(static_cast<const float*>(alpha.data), S * N)) return "alpha holds NaN or inf";
  if (bias.data && !all_finite(static_cast<const float*>(bias.data), N)) return "bias holds NaN or inf";
  if (!all_finite(static_cast<const float*>(x.data), nx)) return "input x holds NaN or inf (produced by an earlier node)";
  plan->M = static_cast<int>(M);
  plan->N = static_cast<int>(N);
  plan->K = static_cast<int>(K);
  plan->S = static_cast<int>(S);
  plan->examples = x.dims.size() >= 2 && x.dims[0] > 0 ? static_cast<int>(x.dims[0]) : 1;
  plan->relu = attrs.relu == 1;
  plan->act.assign(S, ActQuant{});
  for (int64_t s = 0; s < S; ++s) {
    plan->act[s] = ActQuant{static_cast<ActMode>(attrs.mode), static_cast<int>(attrs.bits), attrs.symmetric != 0, st[s]};
    if (attrs.mode == 1 && !(st[s] > 0.0f)) return "activation step must be a positive finite number";
  }
  plan->out_dims = x.dims;
  plan->out_dims.back() = N;
  return "";
}

// Runs a call that passed check_linear; y float [M, N]. M = 0 (an empty batch) writes nothing.
inline std::string run_linear(const LinearPlan& p, const Tensor& x, const Tensor& w, const Tensor& alpha,
                              const Tensor& bias, float* y, int threads, bool per_example = true) {
  if (p.M == 0) return "";
  BinaryLinearArgs a;
  a.M = p.M; a.N = p.N; a.K = p.K; a.S = p.S;
  a.x = static_cast<const float*>(x.data);
  a.w = static_cast<const uint8_t*>(w.data);
  a.alpha = static_cast<const float*>(alpha.data);
  a.bias = static_cast<const float*>(bias.data);
  a.act = p.act.data();
  a.y = y;
  a.threads = threads < 1 ? 1 : threads;
  a.relu = p.relu;
  const std::string e = validate(a);  // the kernels' own guard; check_linear is stricter, so this never fires
  if (!e.empty()) return e;
  if (per_example)
    binary_linear_examples(a, p.examples);
  else
    binary_linear(a);
  return "";
}

// ---- binary embedding -------------------------------------------------------------------------------------------
struct EmbeddingPlan {
  int64_t n = 0;  // number of ids
  int S = 0, D = 0;
  int64_t V = 0, L = 0;  // L = positions per row of ids (ids' last dim) when a base table is added, else 0
  std::vector<int64_t> out_dims;  // ids' dims + [D]
};

// ids int64 [...] with every id in [0, V); table uint8 [S, V, row_bytes(D)] with S >= 1; scales float [S, V];
// D from the `dim` attribute (ONNX) or from base. base (LiteRT only, else null): float [P, D], row p added at
// position p, so ids' last dim L must be <= P (a resizable file carries all max_len position rows).
inline std::string check_embedding(const Tensor& ids, const Tensor& table, const Tensor& scales, const Tensor* base,
                                   int64_t dim, EmbeddingPlan* plan) {
  if (ids.type != DType::kI64) return "ids must be int64";
  if (table.type != DType::kU8 || table.dims.size() != 3) return "table must be uint8 [S, V, row_bytes(D)], got " + dims_str(table.dims);
  const int64_t n = element_count(ids.dims), nt = element_count(table.dims);
  if (n < 0 || nt < 0) return "ids or table is too large or has a negative dim";
  if (base) {
    if (base->type != DType::kF32 || base->dims.size() != 2 || element_count(base->dims) < 0)
      return "base must be float32 [L, D], got " + dims_str(base->dims);
    dim = base->dims[1];
  }
  if (dim < 1 || dim > 1 << 20) return "embedding dim D must be in 1..2^20, got " + std::to_string(dim);
  const int64_t S = table.dims[0], V = table.dims[1];
  if (S < 1 || V < 1) return "table must hold S >= 1 parts of V >= 1 rows, got " + dims_str(table.dims);
  if (table.dims[2] != row_bytes(static_cast<int>(dim)))
    return "shape mismatch: table rows have " + std::to_string(table.dims[2]) + " bytes, expected " +
           std::to_string(row_bytes(static_cast<int>(dim))) + " for D=" + std::to_string(dim);
  const std::vector<int64_t> want_scales{S, V};
  if (scales.type != DType::kF32 || scales.dims != want_scales)
    return "shape mismatch: scales must be float32 [S, V] = " + dims_str(want_scales) + ", got " + dims_str(scales.dims);
  if (n * dim > INT32_MAX) return "output is too large";
  int64_t L = 0;
  if (base) {
    if (ids.dims.empty() || ids.dims.back() < 1 || ids.dims.back() > base->dims[0])
      return "shape mismatch: ids " + dims_str(ids.dims) + " must end in L <= " + std::to_string(base->dims[0]) +
             " (the rows of base)";
    L = ids.dims.back();
  }
  if ((n && !ids.data) || !table.data || !scales.data || (base && !base->data)) return "an input has no data";
  if (!all_finite(static_cast<const float*>(scales.data), S * V)) return "scales holds NaN or inf";
  // only the rows this call adds: a resizable file carries max_len rows, short inputs read few of them
  if (base && !all_finite(static_cast<const float*>(base->data), L * dim)) return "base holds NaN or inf";
  const auto* id = static_cast<const int64_t*>(ids.data);
  for (int64_t i = 0; i < n; ++i)
    if (id[i] < 0 || id[i] >= V)
      return "token id " + std::to_string(id[i]) + " out of range [0, " + std::to_string(V) + ")";
  plan->n = n;
  plan->S = static_cast<int>(S);
  plan->D = static_cast<int>(dim);
  plan->V = V;
  plan->L = L;
  plan->out_dims = ids.dims;
  plan->out_dims.push_back(dim);
  return "";
}

// Runs a call that passed check_embedding; out float [n, D].
inline void run_embedding(const EmbeddingPlan& p, const Tensor& ids, const Tensor& table, const Tensor& scales,
                          const Tensor* base, float* out) {
  if (p.n == 0) return;
  binary_embedding(static_cast<const int64_t*>(ids.data), p.n, static_cast<const uint8_t*>(table.data), p.S, p.V, p.D,
                   static_cast<const float*>(scales.data), out);
  if (!base) return;
  const auto* b = static_cast<const float*>(base->data);
  for (int64_t i = 0; i < p.n; ++i)
    for (int d = 0; d < p.D; ++d) out[i * p.D + d] += b[(i % p.L) * p.D + d];
}

// ---- quantized attention ----------------------------------------------------------------------------------------
constexpr float kMaxAttentionStep = 1e6f;

struct AttentionPlan {
  AttentionArgs args;             // everything but out and threads
  std::vector<int64_t> out_dims;  // q's dims
};

// q, k, v float [B, L, heads * head_dim] of one shape; mask_add float with B * L elements ([B, 1, 1, L] in the
// exported graphs); steps float [4] = (q, k, v, probabilities), positive and finite; heads >= 1 dividing the
// last dim; bits in 2..8. q, k, v and mask_add finite. With packed_qkv, q, k and v are [B, L, 3 H] (the one output
// of a Q/K/V GEMM, usually one tensor given three times): the op reads columns [0, H) of q, [H, 2 H) of k and
// [2 H, 3 H) of v, and the output is [B, L, H].
inline std::string check_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                   const Tensor& steps, int64_t heads, int64_t bits, AttentionPlan* plan,
                                   bool packed_qkv = false) {
  if (q.type != DType::kF32 || q.dims.size() != 3) return "q must be float32 [B, L, H], got " + dims_str(q.dims);
  if (k.type != DType::kF32 || k.dims != q.dims || v.type != DType::kF32 || v.dims != q.dims)
    return "shape mismatch: k " + dims_str(k.dims) + " and v " + dims_str(v.dims) + " must be float32 like q " +
           dims_str(q.dims);
  const int64_t n = element_count(q.dims);
  if (n < 0) return "q " + dims_str(q.dims) + " is too large or has a negative dim";
  if (packed_qkv && q.dims[2] % 3 != 0)
    return "packed q/k/v must be [B, L, 3 H], got a last dim of " + std::to_string(q.dims[2]);
  const int64_t B = q.dims[0], L = q.dims[1], H = packed_qkv ? q.dims[2] / 3 : q.dims[2];
  if (heads < 1 || H < 1 || H % heads != 0)
    return "num_heads must be >= 1 and divide the hidden size " + std::to_string(H) + ", got " + std::to_string(heads);
  if (bits < 2 || bits > 8) return "act_bits must be in 2..8, got " + std::to_string(bits);
  if (mask.type != DType::kF32 || element_count(mask.dims) != B * L || mask.dims.empty() || mask.dims[0] != B ||
      mask.dims.back() != L)
    return "shape mismatch: mask_add must be float32 [B, 1, 1, L] with B * L = " + std::to_string(B * L) +
           " elements, got " + dims_str(mask.dims);
  if (steps.type != DType::kF32 || steps.dims != std::vector<int64_t>{4})
    return "steps must be float32 [4] = (q, k, v, probabilities), got " + dims_str(steps.dims);
  if ((n && (!q.data || !k.data || !v.data || !mask.data)) || !steps.data) return "an input has no data";
  const auto* st = static_cast<const float*>(steps.data);
  for (int i = 0; i < 4; ++i)  // bounded so that scores of 8-bit codes stay finite (no trained step comes near)
    if (!(st[i] > 0.0f) || !(st[i] <= kMaxAttentionStep)) return "activation steps must be in (0, 1e6]";
  if (!all_finite(static_cast<const float*>(mask.data), B * L)) return "mask_add holds NaN or inf";
  for (const Tensor* t : {&q, &k, &v})  // one packed tensor given three times is scanned once
    if ((t == &q || t->data != q.data) && !all_finite(static_cast<const float*>(t->data), n))
      return "q, k or v holds NaN or inf (produced by an earlier node)";
  if (L > 8192 || H / heads > 4096) return "L must be <= 8192 and head_dim <= 4096";
  AttentionArgs& a = plan->args;
  a.B = static_cast<int>(B); a.L = static_cast<int>(L); a.heads = static_cast<int>(heads);
  a.head_dim = static_cast<int>(H / heads); a.bits = static_cast<int>(bits);
  a.q = static_cast<const float*>(q.data); a.k = static_cast<const float*>(k.data);
  a.v = static_cast<const float*>(v.data); a.mask_add = static_cast<const float*>(mask.data);
  if (packed_qkv && n) {
    a.k += H;
    a.v += 2 * H;
    a.in_stride = static_cast<int>(3 * H);
  }
  a.step_q = st[0]; a.step_k = st[1]; a.step_v = st[2]; a.step_p = st[3];
  plan->out_dims = {B, L, H};
  return "";
}

// Runs a call that passed check_attention; out float [B, L, H].
inline std::string run_attention(const AttentionPlan& p, float* out, int threads, Isa isa = Isa::kAuto) {
  if (p.args.B == 0 || p.args.L == 0) return "";
  AttentionArgs a = p.args;
  a.out = out;
  a.threads = threads < 1 ? 1 : threads;
  const std::string e = validate_attention(a);
  if (!e.empty()) return e;
  quant_attention(a, isa);
  return "";
}

// ---- residual add + LayerNorm ---------------------------------------------------------------------------------
struct LayerNormPlan {
  LayerNormArgs args;             // everything but y and threads
  std::vector<int64_t> out_dims;  // x's dims
};

// x and residual float [..., H] of one shape (rank >= 1); gamma, beta float [H]; eps float [1], in (0, 1]. All
// finite.
inline std::string check_add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& gamma,
                                        const Tensor& beta, const Tensor& eps, LayerNormPlan* plan) {
  if (x.type != DType::kF32 || x.dims.empty()) return "x must be float32 [..., H], got " + dims_str(x.dims);
  if (residual.type != DType::kF32 || residual.dims != x.dims)
    return "shape mismatch: residual " + dims_str(residual.dims) + " must be float32 like x " + dims_str(x.dims);
  const int64_t n = element_count(x.dims), H = x.dims.back();
  if (n < 0 || n > INT32_MAX) return "x " + dims_str(x.dims) + " is too large or has a negative dim";
  if (H < 1) return "x must have a positive last dim H, got " + dims_str(x.dims);
  const std::vector<int64_t> want{H};
  if (gamma.type != DType::kF32 || gamma.dims != want || beta.type != DType::kF32 || beta.dims != want)
    return "shape mismatch: gamma " + dims_str(gamma.dims) + " and beta " + dims_str(beta.dims) +
           " must be float32 [H] = " + dims_str(want);
  if (eps.type != DType::kF32 || eps.dims != std::vector<int64_t>{1}) return "eps must be float32 [1], got " + dims_str(eps.dims);
  if ((n && (!x.data || !residual.data)) || !gamma.data || !beta.data || !eps.data) return "an input has no data";
  const float e = *static_cast<const float*>(eps.data);
  if (!(e > 0.0f) || !(e <= 1.0f)) return "eps must be in (0, 1]";
  if (!all_finite(static_cast<const float*>(gamma.data), H) || !all_finite(static_cast<const float*>(beta.data), H))
    return "gamma or beta holds NaN or inf";
  if (!all_finite(static_cast<const float*>(x.data), n) || !all_finite(static_cast<const float*>(residual.data), n))
    return "x or residual holds NaN or inf (produced by an earlier node)";
  LayerNormArgs& a = plan->args;
  a.rows = static_cast<int>(n / H); a.cols = static_cast<int>(H);
  a.x = static_cast<const float*>(x.data); a.residual = static_cast<const float*>(residual.data);
  a.gamma = static_cast<const float*>(gamma.data); a.beta = static_cast<const float*>(beta.data); a.eps = e;
  plan->out_dims = x.dims;
  return "";
}

// Runs a call that passed check_add_layer_norm; y float like x.
inline void run_add_layer_norm(const LayerNormPlan& p, float* y, int threads) {
  if (p.args.rows == 0) return;
  LayerNormArgs a = p.args;
  a.y = y;
  a.threads = threads < 1 ? 1 : threads;
  add_layer_norm(a);
}

}  // namespace ops
}  // namespace bebert
