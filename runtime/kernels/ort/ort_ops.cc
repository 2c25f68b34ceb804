// Native ONNX Runtime custom-op library of bebert-deploy (domain "bebert"): BinaryLinear and BinaryEmbedding
// running the packed-bit kernels. Loaded with SessionOptions.register_custom_ops_library(path).
//
// ONNX Runtime's headers are not available to this project, so this file declares only what it uses of the
// stable, append-only C API: OrtApiBase (GetApi, GetVersionString), positions in the OrtApi function table
// (counted from the public header at API version 13), and the OrtCustomOp struct at version 13. The table
// is checked at load with a harmless round trip (create a status, read its message back, release it).
// Every callback is noexcept: no exception crosses the C boundary. Kernels are immutable after creation,
// so concurrent runs on one kernel are safe.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../bembed/bembed.h"
#include "../bgemm/bgemm.h"
#include "../core/bitpack.h"

namespace {

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

constexpr uint32_t kApiVersion = 13;
constexpr int kOrtFail = 1;          // OrtErrorCode ORT_FAIL
constexpr int kFloat = 1, kUint8 = 2, kInt64 = 7;  // ONNXTensorElementDataType

// OrtApi table positions (0-based) at API version 13.
enum ApiSlot : int {
  kCreateStatus = 0, kGetErrorMessage = 2, kCreateCustomOpDomain = 26, kCustomOpDomainAdd = 27,
  kAddCustomOpDomain = 28, kGetTensorMutableData = 51, kGetDimensionsCount = 61, kGetDimensions = 62,
  kGetTensorTypeAndShape = 65, kKernelInfoGetAttributeInt64 = 86, kKernelContextGetInput = 90,
  kKernelContextGetOutput = 91, kReleaseStatus = 93, kReleaseTensorTypeAndShapeInfo = 99,
};

struct OrtCustomOp {  // version 13 layout: a uint32 version, then 12 function pointers
  uint32_t version;
  void* (*CreateKernel)(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo*);
  const char* (*GetName)(const OrtCustomOp*);
  const char* (*GetExecutionProviderType)(const OrtCustomOp*);
  int (*GetInputType)(const OrtCustomOp*, size_t);
  size_t (*GetInputTypeCount)(const OrtCustomOp*);
  int (*GetOutputType)(const OrtCustomOp*, size_t);
  size_t (*GetOutputTypeCount)(const OrtCustomOp*);
  void (*KernelCompute)(void*, OrtKernelContext*);
  void (*KernelDestroy)(void*);
  int (*GetInputCharacteristic)(const OrtCustomOp*, size_t);
  int (*GetOutputCharacteristic)(const OrtCustomOp*, size_t);
  int (*GetInputMemoryType)(const OrtCustomOp*, size_t);
};

// Typed access to the table.
struct Api {
  const void* const* t = nullptr;
  template <typename F>
  F fn(int slot) const { return reinterpret_cast<F>(const_cast<void*>(t[slot])); }

  OrtStatus* create_status(const char* msg) const {
    return fn<OrtStatus* (*)(int, const char*)>(kCreateStatus)(kOrtFail, msg);
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
  std::vector<int64_t> shape(const OrtValue* v) const {
    std::vector<int64_t> dims;
    OrtTensorTypeAndShapeInfo* info = nullptr;
    if (failed(fn<OrtStatus* (*)(const OrtValue*, OrtTensorTypeAndShapeInfo**)>(kGetTensorTypeAndShape)(v, &info))) return dims;
    size_t n = 0;
    if (!failed(fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, size_t*)>(kGetDimensionsCount)(info, &n))) {
      dims.resize(n);
      if (failed(fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t)>(kGetDimensions)(info, dims.data(), n)))
        dims.clear();
    }
    fn<void (*)(OrtTensorTypeAndShapeInfo*)>(kReleaseTensorTypeAndShapeInfo)(info);
    return dims;
  }
  template <typename T>
  T* data(const OrtValue* v) const {
    void* p = nullptr;
    if (failed(fn<OrtStatus* (*)(OrtValue*, void**)>(kGetTensorMutableData)(const_cast<OrtValue*>(v), &p))) return nullptr;
    return static_cast<T*>(p);
  }
};

Api g_api;
int g_threads = 1;

// A kernel cannot report an error through the version-13 compute callback: it writes NaN outputs and says
// why on stderr once. Graphs written by bebert-deploy are shape-checked at export, so this only catches
// hand-edited models.
void kernel_error(const char* op, const std::string& msg, float* out, size_t n) {
  static bool said = false;
  if (!said) {
    std::fprintf(stderr, "bebert %s: %s (outputs set to NaN)\n", op, msg.c_str());
    said = true;
  }
  if (out)
    for (size_t i = 0; i < n; ++i) out[i] = std::nanf("");
}

int64_t product(const std::vector<int64_t>& d, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t i = from; i < to; ++i) p *= d[i];
  return p;
}

// ---- BinaryLinear ---------------------------------------------------------------------------------------
// inputs: X float [..., K], W uint8 [S, N, row_bytes(K)], alpha float [S, N], bias float [N], steps float [S]
// attributes: act_mode (0 float, 1 int, 2 sign), act_bits, act_symmetric; output: Y float [..., N]
struct LinearKernel {
  bebert::ActMode mode;
  int bits;
  bool symmetric;
};

void* linear_create(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo* info) noexcept {
  int64_t mode = 0, bits = 32, sym = 1;
  g_api.attr_int(info, "act_mode", &mode);
  g_api.attr_int(info, "act_bits", &bits);
  g_api.attr_int(info, "act_symmetric", &sym);
  return new (std::nothrow) LinearKernel{static_cast<bebert::ActMode>(mode), static_cast<int>(bits), sym != 0};
}

void linear_compute(void* k, OrtKernelContext* ctx) noexcept {
  const auto* kern = static_cast<const LinearKernel*>(k);
  const OrtValue* vx = g_api.input(ctx, 0);
  const OrtValue* vw = g_api.input(ctx, 1);
  const OrtValue* va = g_api.input(ctx, 2);
  const OrtValue* vb = g_api.input(ctx, 3);
  const OrtValue* vs = g_api.input(ctx, 4);
  if (!vx || !vw || !va || !vb || !vs) return kernel_error("BinaryLinear", "missing input", nullptr, 0);
  const auto dx = g_api.shape(vx), dw = g_api.shape(vw), da = g_api.shape(va), db = g_api.shape(vb), ds = g_api.shape(vs);
  if (dx.empty() || dw.size() != 3) {
    OrtValue* y = g_api.output(ctx, 0, {1});
    return kernel_error("BinaryLinear", "X must have rank >= 1 and W rank 3", y ? g_api.data<float>(y) : nullptr, 1);
  }
  const int K = static_cast<int>(dx.back()), S = static_cast<int>(dw[0]), N = static_cast<int>(dw[1]);
  const int M = static_cast<int>(product(dx, 0, dx.size() - 1));
  std::vector<int64_t> dy(dx.begin(), dx.end());
  dy.back() = N;
  OrtValue* vy = g_api.output(ctx, 0, dy);
  if (!vy) return kernel_error("BinaryLinear", "cannot allocate output", nullptr, 0);
  float* y = g_api.data<float>(vy);
  const size_t ny = static_cast<size_t>(M) * N;
  if (dw[2] != bebert::row_bytes(K) || da.size() != 2 || da[0] != S || da[1] != N || db.size() != 1 || db[0] != N ||
      ds.size() != 1 || ds[0] != S)
    return kernel_error("BinaryLinear", "shape mismatch between X [..,K], W [S,N,row_bytes(K)], alpha [S,N], bias [N], steps [S]", y, ny);
  if (M == 0) return;
  const float* steps = g_api.data<float>(vs);
  std::vector<bebert::ActQuant> act(S);
  for (int s = 0; s < S; ++s) act[s] = bebert::ActQuant{kern->mode, kern->bits, kern->symmetric, steps[s]};
  bebert::BinaryLinearArgs a;
  a.M = M; a.N = N; a.K = K; a.S = S;
  a.x = g_api.data<float>(vx); a.w = g_api.data<uint8_t>(vw); a.alpha = g_api.data<float>(va);
  a.bias = g_api.data<float>(vb); a.act = act.data(); a.y = y; a.threads = g_threads;
  const std::string err = bebert::validate(a);
  if (!err.empty()) return kernel_error("BinaryLinear", err, y, ny);
  bebert::binary_linear_examples(a, dx.size() >= 2 ? static_cast<int>(dx[0]) : 1);
}

// ---- BinaryEmbedding ------------------------------------------------------------------------------------
// inputs: ids int64 [...], table uint8 [S, V, row_bytes(D)], scales float [S, V]; attribute: dim (D)
// output: float [..., D] = sum_s scales[s, id] * sign(table[s, id])
struct EmbeddingKernel {
  int dim;
};

void* embedding_create(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo* info) noexcept {
  int64_t dim = 0;
  g_api.attr_int(info, "dim", &dim);
  return new (std::nothrow) EmbeddingKernel{static_cast<int>(dim)};
}

void embedding_compute(void* k, OrtKernelContext* ctx) noexcept {
  const int D = static_cast<const EmbeddingKernel*>(k)->dim;
  const OrtValue* vi = g_api.input(ctx, 0);
  const OrtValue* vt = g_api.input(ctx, 1);
  const OrtValue* vs = g_api.input(ctx, 2);
  if (!vi || !vt || !vs) return kernel_error("BinaryEmbedding", "missing input", nullptr, 0);
  const auto di = g_api.shape(vi), dt = g_api.shape(vt), ds = g_api.shape(vs);
  std::vector<int64_t> dy(di.begin(), di.end());
  dy.push_back(D);
  OrtValue* vy = g_api.output(ctx, 0, dy);
  if (!vy) return kernel_error("BinaryEmbedding", "cannot allocate output", nullptr, 0);
  float* y = g_api.data<float>(vy);
  const int64_t n = product(di, 0, di.size());
  const size_t ny = static_cast<size_t>(n) * D;
  if (D <= 0 || dt.size() != 3 || dt[2] != bebert::row_bytes(D) || ds.size() != 2 || ds[0] != dt[0] || ds[1] != dt[1])
    return kernel_error("BinaryEmbedding", "shape mismatch between table [S,V,row_bytes(D)] and scales [S,V]", y, ny);
  if (bebert::binary_embedding(g_api.data<int64_t>(vi), n, g_api.data<uint8_t>(vt), static_cast<int>(dt[0]), dt[1], D,
                               g_api.data<float>(vs), y) > 0)
    kernel_error("BinaryEmbedding", "token id out of range", nullptr, 0);
}

// ---- op descriptors -------------------------------------------------------------------------------------
const char* linear_name(const OrtCustomOp*) noexcept { return "BinaryLinear"; }
const char* embedding_name(const OrtCustomOp*) noexcept { return "BinaryEmbedding"; }
const char* cpu_provider(const OrtCustomOp*) noexcept { return nullptr; }
int linear_input_type(const OrtCustomOp*, size_t i) noexcept { return i == 1 ? kUint8 : kFloat; }
size_t linear_input_count(const OrtCustomOp*) noexcept { return 5; }
int embedding_input_type(const OrtCustomOp*, size_t i) noexcept { return i == 0 ? kInt64 : i == 1 ? kUint8 : kFloat; }
size_t embedding_input_count(const OrtCustomOp*) noexcept { return 3; }
int float_output(const OrtCustomOp*, size_t) noexcept { return kFloat; }
size_t one_output(const OrtCustomOp*) noexcept { return 1; }
void linear_destroy(void* k) noexcept { delete static_cast<LinearKernel*>(k); }
void embedding_destroy(void* k) noexcept { delete static_cast<EmbeddingKernel*>(k); }
int required(const OrtCustomOp*, size_t) noexcept { return 0; }       // INPUT_OUTPUT_REQUIRED
int default_memory(const OrtCustomOp*, size_t) noexcept { return 0; }  // OrtMemTypeDefault

const OrtCustomOp kLinearOp = {kApiVersion, linear_create, linear_name, cpu_provider, linear_input_type,
                               linear_input_count, float_output, one_output, linear_compute, linear_destroy,
                               required, required, default_memory};
const OrtCustomOp kEmbeddingOp = {kApiVersion, embedding_create, embedding_name, cpu_provider, embedding_input_type,
                                  embedding_input_count, float_output, one_output, embedding_compute,
                                  embedding_destroy, required, required, default_memory};

OrtCustomOpDomain* g_domain = nullptr;  // must outlive every session: created once, never released

}  // namespace

extern "C" {

// Sets the thread count of our kernels (the Python Session passes its intra-op thread count).
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
    if (g_api.failed(add(d, &kLinearOp)) || g_api.failed(add(d, &kEmbeddingOp)))
      return g_api.create_status("bebert ops: cannot add the ops to the domain");
    g_domain = d;
  }
  return g_api.fn<OrtStatus* (*)(OrtSessionOptions*, OrtCustomOpDomain*)>(kAddCustomOpDomain)(options, g_domain);
}

}  // extern "C"
