// libFuzzer target for the custom ops' entry points (runtime/OPS.md): what the ONNX Runtime and LiteRT glue
// layers (kernels/ort/ort_ops.cc, kernels/litert/litert_ops.cc) do with the tensors a model file hands them.
// The fuzz input chooses one op call: each input's element type, rank and dims (consistent or not), the
// attributes (in and out of their domain), the constant buffers' bytes (NaN, inf, huge values, token ids out of
// range) and the thread count. Buffers are exactly as large as their declared dims, as the runtimes allocate
// them, so any read or write past them is caught by AddressSanitizer; UndefinedBehaviorSanitizer catches
// overflow in index arithmetic and bad float-to-int conversions. A call the shared checks (core/op_checks.h)
// accept must then run to completion and give finite outputs for finite inputs.
//
// Build and run: runtime/kernels/fuzz/run_fuzz.sh [seconds] (clang++ -fsanitize=fuzzer,address,undefined).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../core/op_checks.h"

namespace {

using bebert::ops::DType;
using bebert::ops::Tensor;

// Reads the fuzz input front to back; past the end every read returns 0.
struct Input {
  const uint8_t* p;
  size_t n;
  uint8_t byte() {
    if (!n) return 0;
    --n;
    return *p++;
  }
  int range(int lo, int hi) { return lo + byte() % (hi - lo + 1); }  // [lo, hi]
  float number() {
    switch (byte() % 8) {  // mostly ordinary values, sometimes the ones that break arithmetic
      case 0: return std::nanf("");
      case 1: return (byte() & 1) ? INFINITY : -INFINITY;
      case 2: return 0.0f;
      case 3: return (byte() & 1) ? 3e38f : -3e38f;
      default: return (static_cast<int>(byte()) - 128) / 16.0f;
    }
  }
};

// A tensor whose storage matches its declared type and dims (as in ORT and LiteRT), filled from the input.
struct Owned {
  Tensor t;
  std::vector<uint8_t> bytes;
};

size_t type_size(DType d) { return d == DType::kU8 ? 1 : d == DType::kI64 ? 8 : 4; }

// `want` dims are used as given most of the time; otherwise a dim is bent or the rank changed.
Owned make(Input& in, DType type, std::vector<int64_t> want, bool finite_floats = false) {
  Owned o;
  const int roll = in.byte() % 16;
  o.t.type = roll == 0 ? static_cast<DType>(in.range(0, 4)) : type;
  if (roll == 1 && !want.empty()) want.pop_back();
  if (roll == 2) want.push_back(in.range(0, 3));
  if (roll == 3 && !want.empty()) want[in.byte() % want.size()] = in.range(0, 9);
  o.t.dims = want;
  const int64_t count = bebert::ops::element_count(want);
  if (count < 0 || count > (1 << 16)) {  // the runtimes would refuse to allocate it; keep the harness small
    o.t.dims.assign(1, 0);
  }
  const int64_t n = bebert::ops::element_count(o.t.dims);
  o.bytes.resize(static_cast<size_t>(n) * type_size(o.t.type));
  if (o.t.type == DType::kF32) {
    for (int64_t i = 0; i < n; ++i) {
      float v = in.number();
      if (finite_floats && !std::isfinite(v)) v = 1.0f;
      std::memcpy(o.bytes.data() + 4 * i, &v, 4);
    }
  } else if (o.t.type == DType::kI64) {
    for (int64_t i = 0; i < n; ++i) {
      int64_t v = static_cast<int64_t>(in.range(-2, 40));
      if (in.byte() == 255) v = INT64_MIN;
      std::memcpy(o.bytes.data() + 8 * i, &v, 8);
    }
  } else {
    for (auto& b : o.bytes) b = in.byte();
  }
  static const uint64_t kNoElements = 0;  // an empty tensor still has a (never read) data pointer, as in ORT
  o.t.data = o.bytes.empty() ? static_cast<const void*>(&kNoElements) : o.bytes.data();
  return o;
}

// Largest |value| of a float tensor (0 for other types): outputs are only required to be finite when the
// inputs are moderate, since 3e38 * K overflows float legitimately.
float max_abs(const Owned& o) {
  float m = 0.0f;
  for (size_t i = 0; o.t.type == DType::kF32 && i + 4 <= o.bytes.size(); i += 4) {
    float v;
    std::memcpy(&v, o.bytes.data() + i, 4);
    m = std::fmax(m, std::fabs(v));
  }
  return m;
}

bool finite(const std::vector<float>& y) {
  for (float v : y)
    if (!std::isfinite(v)) return false;
  return true;
}

void fuzz_linear(Input& in) {
  const int rank = in.range(1, 3), K = in.range(1, 140), S = in.range(0, 3), N = in.range(1, 40);
  std::vector<int64_t> xd;
  for (int i = 0; i < rank - 1; ++i) xd.push_back(in.range(0, 3));
  xd.push_back(K);
  const bool finite_x = in.byte() % 4 != 0;
  Owned x = make(in, DType::kF32, xd, finite_x);
  Owned w = make(in, DType::kU8, {S, N, bebert::row_bytes(K)});
  Owned alpha = make(in, DType::kF32, {S, N});
  Owned bias = make(in, DType::kF32, {N});
  Owned steps = make(in, DType::kF32, {S});
  bebert::ops::ActAttrs attrs;
  const int preset = in.range(0, 4);  // the exporters' combinations, or anything
  attrs.mode = preset == 0 ? 0 : preset == 1 ? 1 : preset == 2 ? 2 : in.range(-2, 4);
  attrs.bits = preset == 0 ? 32 : preset == 1 ? in.range(2, 8) : preset == 2 ? 1 : in.range(-2, 40);
  attrs.symmetric = preset <= 2 ? in.range(0, 1) : in.range(-1, 3);
  attrs.relu = preset <= 2 ? in.range(0, 1) : in.range(-1, 2);
  const bool with_bias = in.byte() % 8 != 0;
  if (!with_bias) bias.t.data = nullptr;  // the Python binding's optional bias
  bebert::ops::LinearPlan plan;
  const std::string err = bebert::ops::check_linear(x.t, w.t, alpha.t, bias.t, steps.t, attrs, &plan);
  if (!err.empty()) return;
  // Accepted: the plan must describe the buffers exactly, and the kernel must fill a finite output.
  if (plan.M * static_cast<int64_t>(plan.K) != bebert::ops::element_count(x.t.dims)) std::abort();
  std::vector<float> y(static_cast<size_t>(plan.M) * plan.N, NAN);
  const std::string run_err = bebert::ops::run_linear(plan, x.t, w.t, alpha.t, bias.t, y.data(), in.range(1, 3),
                                                      in.byte() & 1);
  if (!run_err.empty()) std::abort();  // check_linear promised a valid call
  const bool moderate = max_abs(x) <= 1e3f && max_abs(alpha) <= 1e3f && max_abs(bias) <= 1e3f && max_abs(steps) <= 1e3f;
  if (moderate && !finite(y)) std::abort();
  if (plan.relu)
    for (float v : y)
      if (v < 0.0f) std::abort();  // the fused ReLU left a negative output
}

void fuzz_embedding(Input& in) {
  const int S = in.range(0, 3), V = in.range(0, 40), D = in.range(0, 140), rank = in.range(0, 3);
  std::vector<int64_t> idd;
  for (int i = 0; i < rank; ++i) idd.push_back(in.range(0, 4));
  Owned ids = make(in, DType::kI64, idd);
  Owned table = make(in, DType::kU8, {S, V, bebert::row_bytes(D < 1 ? 1 : D)});
  Owned scales = make(in, DType::kF32, {S, V});
  const bool litert = in.byte() & 1;  // LiteRT's variant adds a base table [L, D]
  Owned base = make(in, DType::kF32, {idd.empty() ? 1 : idd.back(), D});
  const int64_t dim = in.byte() % 8 == 0 ? in.range(-3, 200) : D;
  bebert::ops::EmbeddingPlan plan;
  if (!bebert::ops::check_embedding(ids.t, table.t, scales.t, litert ? &base.t : nullptr, dim, &plan).empty()) return;
  const int64_t n = bebert::ops::element_count(ids.t.dims);
  if (plan.n != n || plan.D < 1) std::abort();
  std::vector<float> y(static_cast<size_t>(plan.n) * plan.D, NAN);
  bebert::ops::run_embedding(plan, ids.t, table.t, scales.t, litert ? &base.t : nullptr, y.data());
  // scales and base were checked finite and at most 3 parts are summed: moderate values give finite outputs.
  const bool big = max_abs(scales) > 1e30f || (litert && max_abs(base) > 1e30f);
  if (!big && !finite(y)) std::abort();
}

void fuzz_attention(Input& in) {
  const int B = in.range(0, 2), L = in.range(0, 20), heads = in.range(0, 4), hd = in.range(1, 20);
  std::vector<int64_t> qd{B, L, heads * hd};
  if (in.byte() % 8 == 0) qd[2] = in.range(0, 50);  // a width the heads may not divide
  Owned q = make(in, DType::kF32, qd, in.byte() % 4 != 0), k = make(in, DType::kF32, qd), v = make(in, DType::kF32, qd);
  std::vector<int64_t> md{B, 1, 1, L};
  if (in.byte() % 8 == 0) md = {in.range(0, 3), in.range(0, 20)};
  Owned mask = make(in, DType::kF32, md);
  Owned steps = make(in, DType::kF32, {in.byte() % 8 == 0 ? in.range(0, 6) : 4});
  const int64_t bits = in.byte() % 4 == 0 ? in.range(-2, 12) : 4, nh = in.byte() % 8 == 0 ? in.range(-2, 6) : heads;
  const bool packed = in.byte() % 4 == 0;  // q, k, v as column ranges of [B, L, 3 H] (any width: check refuses)
  bebert::ops::AttentionPlan plan;
  if (!bebert::ops::check_attention(q.t, k.t, v.t, mask.t, steps.t, nh, bits, &plan, packed).empty()) return;
  // the output has q's checked dims, which may differ from the dims the harness asked for (make() mutates them)
  std::vector<float> y(static_cast<size_t>(bebert::ops::element_count(plan.out_dims)), NAN);
  if (!bebert::ops::run_attention(plan, y.data(), in.range(1, 3)).empty()) std::abort();  // check promised a valid call
  // codes are bounded and softmax is in [0, 1]: moderate steps and masks give finite outputs
  if (max_abs(steps) <= 1e3f && max_abs(mask) <= 1e4f && !finite(y)) std::abort();
}

void fuzz_layer_norm(Input& in) {
  const int rank = in.range(1, 3);
  std::vector<int64_t> xd;
  for (int i = 0; i < rank; ++i) xd.push_back(in.range(0, 40));
  Owned x = make(in, DType::kF32, xd, in.byte() % 4 != 0), r = make(in, DType::kF32, xd);
  const int64_t H = xd.back();
  Owned g = make(in, DType::kF32, {H}), b = make(in, DType::kF32, {H}), eps = make(in, DType::kF32, {1});
  bebert::ops::LayerNormPlan plan;
  if (!bebert::ops::check_add_layer_norm(x.t, r.t, g.t, b.t, eps.t, &plan).empty()) return;
  std::vector<float> y(static_cast<size_t>(bebert::ops::element_count(plan.out_dims)), NAN);
  bebert::ops::run_add_layer_norm(plan, y.data(), in.range(1, 3));
  // finite inputs of moderate size and eps > 0: every output is finite
  if (max_abs(x) <= 1e15f && max_abs(r) <= 1e15f && max_abs(g) <= 1e15f && max_abs(b) <= 1e15f && !finite(y)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in{data, size};
  const int op = in.byte() % 4;
  if (op == 0)
    fuzz_embedding(in);
  else if (op == 1)
    fuzz_linear(in);
  else if (op == 2)
    fuzz_attention(in);
  else
    fuzz_layer_norm(in);
  return 0;
}
