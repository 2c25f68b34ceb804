// Native ONNX Runtime custom-op library of bebert-deploy (domain "bebert"): BinaryLinear, BinaryEmbedding and
// QuantAttention running our kernels (contract: runtime/OPS.md). Loaded with
// SessionOptions.register_custom_ops_library(path).
//
// ONNX Runtime's headers are not available to this project, so this file declares only what it uses of the
// stable, append-only C API: OrtApiBase (GetApi, GetVersionString), positions in the OrtApi function table
// (counted from the public header include/onnxruntime/core/session/onnxruntime_c_api.h at API version 13), and
// the OrtCustomOp struct at version 16, the first whose kernels create and compute with an OrtStatus result
// (CreateKernelV2, KernelComputeV2), so a bad node fails the session or the run with our message instead of
// producing a silent wrong answer. The field order was read from that header's `struct OrtCustomOp` and the
// version gates from onnxruntime/core/session/custom_ops.cc (compute-v2 from version 16; shape inference and
// op-set versions from 17, which we leave unset). The table is checked at load with a harmless round trip
// (create a status, read its message back, release it). Every callback is noexcept: no exception crosses the C
// boundary. Kernels are immutable after creation, so concurrent runs on one kernel are safe.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "../core/op_checks.h"

namespace {

using bebert::ops::DType;
using bebert::ops::Tensor;

// ---- the part of the ONNX Runtime C ABI this library uses ------------------------------------------------
struct OrtStatus;
struct OrtApi;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtTensorTypeAndShapeInfo;

struct OrtApiBase {
  const OrtApi* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};

constexpr uint32_t kApiVersion = 13;       // the OrtApi table layout declared below
constexpr uint32_t kCustomOpVersion = 16;  // the OrtCustomOp layout declared below (status-returning kernels)
constexpr int kOrtFail = 1, kOrtInvalidArgument = 2;           // OrtErrorCode
constexpr int kOnnxFloat = 1, kOnnxUint8 = 2, kOnnxInt64 = 7;  // ONNXTensorElementDataType

// OrtApi table positions (0-based) at API version 13.
enum ApiSlot : int {
  kCreateStatus = 0, kGetErrorMessage = 2, kCreateCustomOpDomain = 26, kCustomOpDomainAdd = 27,
  kAddCustomOpDomain = 28, kGetTensorMutableData = 51, kGetTensorElementType = 60, kGetDimensionsCount = 61,
  kGetDimensions = 62, kGetTensorTypeAndShape = 65, kKernelInfoGetAttributeInt64 = 86, kKernelContextGetInput = 90,
  kKernelContextGetOutput = 91, kReleaseStatus = 93, kReleaseTensorTypeAndShapeInfo = 99,
};

struct OrtCustomOp;
using OpFn = const OrtCustomOp*;
// The version-16 layout. The fields after KernelComputeV2 belong to later versions: ONNX Runtime reads them only
// when `version` says they exist; they are declared (and left null) so the struct has the header's full shape.
struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(OpFn, const OrtApi*, const OrtKernelInfo*);
  const char* (*GetName)(OpFn);
  const char* (*GetExecutionProviderType)(OpFn);
  int (*GetInputType)(OpFn, size_t);
  size_t (*GetInputTypeCount)(OpFn);
  int (*GetOutputType)(OpFn, size_t);
  size_t (*GetOutputTypeCount)(OpFn);
  void (*KernelCompute)(void*, OrtKernelContext*);
  void (*KernelDestroy)(void*);
  int (*GetInputCharacteristic)(OpFn, size_t);
  int (*GetOutputCharacteristic)(OpFn, size_t);
  int (*GetInputMemoryType)(OpFn, size_t);
  int (*GetVariadicInputMinArity)(OpFn);  // version 14
  int (*GetVariadicInputHomogeneity)(OpFn);
  int (*GetVariadicOutputMinArity)(OpFn);
  int (*GetVariadicOutputHomogeneity)(OpFn);
  OrtStatus* (*CreateKernelV2)(OpFn, const OrtApi*, const OrtKernelInfo*, void** kernel);  // version 16
  OrtStatus* (*KernelComputeV2)(void*, OrtKernelContext*);
  void* InferOutputShapeFn;  // version 17 on: unused
  void* GetStartVersion;
  void* GetEndVersion;
  void* GetMayInplace;
  void* ReleaseMayInplace;
  void* GetAliasMap;
  void* ReleaseAliasMap;
};

// Typed access to the table.
struct Api {
  const void* const* t = nullptr;
  template <typename F>
  F fn(int slot) const { return reinterpret_cast<F>(const_cast<void*>(t[slot])); }

  OrtStatus* create_status(const char* msg, int code = kOrtFail) const {
    return fn<OrtStatus* (*)(int, const char*)>(kCreateStatus)(code, msg);
  }
  const char* message(const OrtStatus* s) const { return fn<const char* (*)(const OrtStatus*)>(kGetErrorMessage)(s); }
  void release(OrtStatus* s) const {
    if (s) fn<void (*)(OrtStatus*)>(kReleaseStatus)(s);
  }
  // Releases a status and reports whether it was an error.
  bool failed(OrtStatus* s) const {
    if (!s) return false;
    release(s);
    return true;
  }
  bool attr_int(const OrtKernelInfo* info, const char* name, int64_t* out) const {
    return !failed(fn<OrtStatus* (*)(const OrtKernelInfo*, const char*, int64_t*)>(kKernelInfoGetAttributeInt64)(info, name, out));
  }
  const OrtValue* input(OrtKernelContext* ctx, size_t i) const {
    const OrtValue* v = nullptr;
    if (failed(fn<OrtStatus* (*)(const OrtKernelContext*, size_t, const OrtValue**)>(kKernelContextGetInput)(ctx, i, &v))) return nullptr;
    return v;
  }
  OrtValue* output(OrtKernelContext* ctx, size_t i, const std::vector<int64_t>& dims) const {
    OrtValue* v = nullptr;
    if (failed(fn<OrtStatus* (*)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**)>(kKernelContextGetOutput)(
            ctx, i, dims.data(), dims.size(), &v)))
      return nullptr;
    return v;
  }
  template <typename T>
  T* data(const OrtValue* v) const {
    void* p = nullptr;
    if (failed(fn<OrtStatus* (*)(OrtValue*, void**)>(kGetTensorMutableData)(const_cast<OrtValue*>(v), &p))) return nullptr;
    return static_cast<T*>(p);
  }
  // The view the shared checks take: element type, dims and data of one input (type kOther if unreadable).
  Tensor view(const OrtValue* v) const {
    Tensor t;
    if (!v) return t;
    OrtTensorTypeAndShapeInfo* info = nullptr;
    if (failed(fn<OrtStatus* (*)(const OrtValue*, OrtTensorTypeAndShapeInfo**)>(kGetTensorTypeAndShape)(v, &info))) return t;
    int type = 0;
    size_t n = 0;
    bool ok = !failed(fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, int*)>(kGetTensorElementType)(info, &type)) &&
              !failed(fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, size_t*)>(kGetDimensionsCount)(info, &n));
    if (ok) {
      t.dims.resize(n);
      ok = !failed(fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t)>(kGetDimensions)(info, t.dims.data(), n));
    }
    fn<void (*)(OrtTensorTypeAndShapeInfo*)>(kReleaseTensorTypeAndShapeInfo)(info);
    if (!ok) return Tensor{};
    t.type = type == kOnnxFloat ? DType::kF32 : type == kOnnxUint8 ? DType::kU8 : type == kOnnxInt64 ? DType::kI64 : DType::kOther;
    t.data = data<void>(v);
    return t;
  }
};

Api g_api;
std::atomic<int> g_threads{1};

// An error status "<op>: <what>"; ONNX Runtime prefixes the node's name when it reports the failed run.
OrtStatus* op_error(const char* op, const std::string& msg) {
  return g_api.create_status((std::string(op) + ": " + msg).c_str(), kOrtInvalidArgument);
}

// ---- BinaryLinear (runtime/OPS.md) ----------------------------------------------------------------------
struct LinearKernel {
  bebert::ops::ActAttrs attrs;
  std::string attr_error;  // non-empty: an attribute is outside its domain (reported by every compute)
  int threads;             // bebert_set_threads at the session's creation: thread counts are per session
};

OrtStatus* linear_create(OpFn, const OrtApi*, const OrtKernelInfo* info, void** kernel) noexcept {
  bebert::ops::ActAttrs a;  // an absent attribute keeps its default (float activations)
  g_api.attr_int(info, "act_mode", &a.mode);
  g_api.attr_int(info, "act_bits", &a.bits);
  g_api.attr_int(info, "act_symmetric", &a.symmetric);
  g_api.attr_int(info, "relu", &a.relu);
  // An attribute outside its domain is reported by the compute call rather than here: ONNX Runtime names the
  // node in a failed run's message but not in a failed kernel creation's, and the Python Session's warm-up run
  // at load makes both happen when the file is opened.
  *kernel = new (std::nothrow) LinearKernel{a, bebert::ops::check_act_attrs(a), g_threads.load()};
  return *kernel ? nullptr : op_error("BinaryLinear", "out of memory");
}

OrtStatus* linear_compute(void* k, OrtKernelContext* ctx) noexcept {
  const auto* kern = static_cast<const LinearKernel*>(k);
  if (!kern->attr_error.empty()) return op_error("BinaryLinear", kern->attr_error);
  const Tensor x = g_api.view(g_api.input(ctx, 0)), w = g_api.view(g_api.input(ctx, 1)),
               alpha = g_api.view(g_api.input(ctx, 2)), bias = g_api.view(g_api.input(ctx, 3)),
               steps = g_api.view(g_api.input(ctx, 4));
  if (!bias.data) return op_error("BinaryLinear", "the bias input is missing");
  bebert::ops::LinearPlan plan;
  std::string err = bebert::ops::check_linear(x, w, alpha, bias, steps, kern->attrs, &plan);
  if (!err.empty()) return op_error("BinaryLinear", err);
  OrtValue* vy = g_api.output(ctx, 0, plan.out_dims);
  float* y = vy ? g_api.data<float>(vy) : nullptr;
  if (!y && plan.M > 0) return op_error("BinaryLinear", "cannot allocate the output");
  err = bebert::ops::run_linear(plan, x, w, alpha, bias, y, kern->threads);
  return err.empty() ? nullptr : op_error("BinaryLinear", err);
}

// ---- BinaryEmbedding (runtime/OPS.md) -------------------------------------------------------------------
struct EmbeddingKernel {
  int64_t dim;  // 0 when the attribute is missing: check_embedding refuses it (as above, at compute time)
};

OrtStatus* embedding_create(OpFn, const OrtApi*, const OrtKernelInfo* info, void** kernel) noexcept {
  int64_t dim = 0;
  g_api.attr_int(info, "dim", &dim);
  *kernel = new (std::nothrow) EmbeddingKernel{dim};
  return *kernel ? nullptr : op_error("BinaryEmbedding", "out of memory");
}

OrtStatus* embedding_compute(void* k, OrtKernelContext* ctx) noexcept {
  const Tensor ids = g_api.view(g_api.input(ctx, 0)), table = g_api.view(g_api.input(ctx, 1)),
               scales = g_api.view(g_api.input(ctx, 2));
  bebert::ops::EmbeddingPlan plan;
  const std::string err =
      bebert::ops::check_embedding(ids, table, scales, nullptr, static_cast<const EmbeddingKernel*>(k)->dim, &plan);
  if (!err.empty()) return op_error("BinaryEmbedding", err);
  OrtValue* vy = g_api.output(ctx, 0, plan.out_dims);
  float* y = vy ? g_api.data<float>(vy) : nullptr;
  if (!y && plan.n > 0) return op_error("BinaryEmbedding", "cannot allocate the output");
  bebert::ops::run_embedding(plan, ids, table, scales, nullptr, y);
  return nullptr;
}

// ---- QuantAttention (runtime/OPS.md) --------------------------------------------------------------------
struct AttentionKernel {
  int64_t heads, bits;  // 0 when an attribute is missing: check_attention refuses it (at compute time, as above)
  int64_t packed_qkv;   // optional, 0 or 1
  int threads;
};

OrtStatus* attention_create(OpFn, const OrtApi*, const OrtKernelInfo* info, void** kernel) noexcept {
  int64_t heads = 0, bits = 0, packed = 0;
  g_api.attr_int(info, "num_heads", &heads);
  g_api.attr_int(info, "act_bits", &bits);
  g_api.attr_int(info, "packed_qkv", &packed);
  *kernel = new (std::nothrow) AttentionKernel{heads, bits, packed, g_threads.load()};
  return *kernel ? nullptr : op_error("QuantAttention", "out of memory");
}

OrtStatus* attention_compute(void* k, OrtKernelContext* ctx) noexcept {
  const auto* kern = static_cast<const AttentionKernel*>(k);
  const Tensor q = g_api.view(g_api.input(ctx, 0)), kk = g_api.view(g_api.input(ctx, 1)), v = g_api.view(g_api.input(ctx, 2)),
               mask = g_api.view(g_api.input(ctx, 3)), steps = g_api.view(g_api.input(ctx, 4));
  if (kern->packed_qkv != 0 && kern->packed_qkv != 1)
    return op_error("QuantAttention", "packed_qkv must be 0 or 1, got " + std::to_string(kern->packed_qkv));
  bebert::ops::AttentionPlan plan;
  std::string err = bebert::ops::check_attention(q, kk, v, mask, steps, kern->heads, kern->bits, &plan, kern->packed_qkv);
  if (!err.empty()) return op_error("QuantAttention", err);
  OrtValue* vy = g_api.output(ctx, 0, plan.out_dims);
  float* y = vy ? g_api.data<float>(vy) : nullptr;
  if (!y && plan.args.B * plan.args.L > 0) return op_error("QuantAttention", "cannot allocate the output");
  err = bebert::ops::run_attention(plan, y, kern->threads);
  return err.empty() ? nullptr : op_error("QuantAttention", err);
}

// ---- AddLayerNorm (runtime/OPS.md) ---------------------------------------------------------------------
struct LayerNormKernel {
  int threads;
};

OrtStatus* layer_norm_create(OpFn, const OrtApi*, const OrtKernelInfo*, void** kernel) noexcept {
  *kernel = new (std::nothrow) LayerNormKernel{g_threads.load()};
  return *kernel ? nullptr : op_error("AddLayerNorm", "out of memory");
}

OrtStatus* layer_norm_compute(void* k, OrtKernelContext* ctx) noexcept {
  const Tensor x = g_api.view(g_api.input(ctx, 0)), r = g_api.view(g_api.input(ctx, 1)),
               gamma = g_api.view(g_api.input(ctx, 2)), beta = g_api.view(g_api.input(ctx, 3)),
               eps = g_api.view(g_api.input(ctx, 4));
  bebert::ops::LayerNormPlan plan;
  const std::string err = bebert::ops::check_add_layer_norm(x, r, gamma, beta, eps, &plan);
  if (!err.empty()) return op_error("AddLayerNorm", err);
  OrtValue* vy = g_api.output(ctx, 0, plan.out_dims);
  float* y = vy ? g_api.data<float>(vy) : nullptr;
  if (!y && plan.args.rows > 0) return op_error("AddLayerNorm", "cannot allocate the output");
  bebert::ops::run_add_layer_norm(plan, y, static_cast<const LayerNormKernel*>(k)->threads);
  return nullptr;
}

// Version-1 entry points: part of the struct, but ONNX Runtime calls the V2 pair above whenever the struct's
// version is >= 16 (and RegisterCustomOps refuses runtimes older than 1.16).
void* linear_create_v1(OpFn op, const OrtApi* api, const OrtKernelInfo* info) noexcept {
  void* k = nullptr;
  g_api.release(linear_create(op, api, info, &k));
  return k;
}
void* embedding_create_v1(OpFn op, const OrtApi* api, const OrtKernelInfo* info) noexcept {
  void* k = nullptr;
  g_api.release(embedding_create(op, api, info, &k));
  return k;
}
void* attention_create_v1(OpFn op, const OrtApi* api, const OrtKernelInfo* info) noexcept {
  void* k = nullptr;
  g_api.release(attention_create(op, api, info, &k));
  return k;
}
void* layer_norm_create_v1(OpFn op, const OrtApi* api, const OrtKernelInfo* info) noexcept {
  void* k = nullptr;
  g_api.release(layer_norm_create(op, api, info, &k));
  return k;
}
void layer_norm_compute_v1(void* k, OrtKernelContext* ctx) noexcept { g_api.release(layer_norm_compute(k, ctx)); }
void linear_compute_v1(void* k, OrtKernelContext* ctx) noexcept { g_api.release(linear_compute(k, ctx)); }
void attention_compute_v1(void* k, OrtKernelContext* ctx) noexcept { g_api.release(attention_compute(k, ctx)); }
void embedding_compute_v1(void* k, OrtKernelContext* ctx) noexcept { g_api.release(embedding_compute(k, ctx)); }

// ---- op descriptors -------------------------------------------------------------------------------------
const char* linear_name(OpFn) noexcept { return "BinaryLinear"; }
const char* embedding_name(OpFn) noexcept { return "BinaryEmbedding"; }
const char* attention_name(OpFn) noexcept { return "QuantAttention"; }
const char* layer_norm_name(OpFn) noexcept { return "AddLayerNorm"; }
const char* cpu_provider(OpFn) noexcept { return nullptr; }
int linear_input_type(OpFn, size_t i) noexcept { return i == 1 ? kOnnxUint8 : kOnnxFloat; }
size_t linear_input_count(OpFn) noexcept { return 5; }
int embedding_input_type(OpFn, size_t i) noexcept { return i == 0 ? kOnnxInt64 : i == 1 ? kOnnxUint8 : kOnnxFloat; }
size_t embedding_input_count(OpFn) noexcept { return 3; }
int float_input(OpFn, size_t) noexcept { return kOnnxFloat; }
size_t five_inputs(OpFn) noexcept { return 5; }  // QuantAttention, AddLayerNorm
int float_output(OpFn, size_t) noexcept { return kOnnxFloat; }
size_t one_output(OpFn) noexcept { return 1; }
void linear_destroy(void* k) noexcept { delete static_cast<LinearKernel*>(k); }
void embedding_destroy(void* k) noexcept { delete static_cast<EmbeddingKernel*>(k); }
void attention_destroy(void* k) noexcept { delete static_cast<AttentionKernel*>(k); }
void layer_norm_destroy(void* k) noexcept { delete static_cast<LayerNormKernel*>(k); }
int required(OpFn, size_t) noexcept { return 0; }       // INPUT_OUTPUT_REQUIRED
int default_memory(OpFn, size_t) noexcept { return 0; }  // OrtMemTypeDefault
int one(OpFn) noexcept { return 1; }  // variadic arity / homogeneity: never asked (no variadic inputs)

const OrtCustomOp kLinearOp = {kCustomOpVersion, linear_create_v1, linear_name, cpu_provider, linear_input_type,
                               linear_input_count, float_output, one_output, linear_compute_v1, linear_destroy,
                               required, required, default_memory, one, one, one, one, linear_create, linear_compute,
                               nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
const OrtCustomOp kEmbeddingOp = {kCustomOpVersion, embedding_create_v1, embedding_name, cpu_provider,
                                  embedding_input_type, embedding_input_count, float_output, one_output,
                                  embedding_compute_v1, embedding_destroy, required, required, default_memory, one,
                                  one, one, one, embedding_create, embedding_compute, nullptr, nullptr, nullptr,
                                  nullptr, nullptr, nullptr, nullptr};

const OrtCustomOp kAttentionOp = {kCustomOpVersion, attention_create_v1, attention_name, cpu_provider, float_input,
                                  five_inputs, float_output, one_output, attention_compute_v1,
                                  attention_destroy, required, required, default_memory, one, one, one, one,
                                  attention_create, attention_compute, nullptr, nullptr, nullptr, nullptr, nullptr,
                                  nullptr, nullptr};

const OrtCustomOp kLayerNormOp = {kCustomOpVersion, layer_norm_create_v1, layer_norm_name, cpu_provider, float_input,
                                  five_inputs, float_output, one_output, layer_norm_compute_v1,
                                  layer_norm_destroy, required, required, default_memory, one, one, one, one,
                                  layer_norm_create, layer_norm_compute, nullptr, nullptr, nullptr, nullptr, nullptr,
                                  nullptr, nullptr};

OrtCustomOpDomain* g_domain = nullptr;  // must outlive every session: created once, never released

}  // namespace

extern "C" {

// Sets the thread count of the kernels of sessions created from now on (each kernel keeps the value it was created
// with, so two sessions in one process keep their own counts); the Python Session calls it just before it creates
// its ONNX Runtime session.
__attribute__((visibility("default"))) void bebert_set_threads(int n) { g_threads = n < 1 ? 1 : n; }
__attribute__((visibility("default"))) const char* bebert_isa() { return bebert::isa_name(bebert::best_isa()); }

__attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
  if (!base || !base->GetApi) return nullptr;  // nothing sane to report through
  const OrtApi* api = base->GetApi(kApiVersion);
  const char* version = base->GetVersionString ? base->GetVersionString() : "?";
  if (!api) {
    std::fprintf(stderr, "bebert ops: ONNX Runtime %s does not provide C API version %u\n", version, kApiVersion);
    return nullptr;  // cannot create a status without the table; the session then fails on the unknown op
  }
  g_api.t = reinterpret_cast<const void* const*>(api);
  // Round trip through the table: a wrong layout would not give our message back.
  OrtStatus* probe = g_api.create_status("bebert-probe");
  const bool ok = probe && std::strcmp(g_api.message(probe), "bebert-probe") == 0;
  g_api.release(probe);
  if (!ok) {
    std::fprintf(stderr, "bebert ops: unexpected ONNX Runtime C API layout (runtime %s)\n", version);
    return nullptr;
  }
  if (std::strncmp(version, "1.", 2) != 0 || std::atoi(version + 2) < 16) {
    return g_api.create_status((std::string("bebert ops need onnxruntime >= 1.16, found ") + version).c_str());
  }
  if (!g_domain) {
    OrtCustomOpDomain* d = nullptr;
    if (g_api.failed(g_api.fn<OrtStatus* (*)(const char*, OrtCustomOpDomain**)>(kCreateCustomOpDomain)("bebert", &d)))
      return g_api.create_status("bebert ops: cannot create the custom-op domain");
    auto add = g_api.fn<OrtStatus* (*)(OrtCustomOpDomain*, const OrtCustomOp*)>(kCustomOpDomainAdd);
    if (g_api.failed(add(d, &kLinearOp)) || g_api.failed(add(d, &kEmbeddingOp)) || g_api.failed(add(d, &kAttentionOp)) ||
        g_api.failed(add(d, &kLayerNormOp)))
      return g_api.create_status("bebert ops: cannot add the ops to the domain");
    g_domain = d;
  }
  return g_api.fn<OrtStatus* (*)(OrtSessionOptions*, OrtCustomOpDomain*)>(kAddCustomOpDomain)(options, g_domain);
}

}  // extern "C"
