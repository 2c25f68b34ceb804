// LiteRT runner of bebert-deploy: runs a .tflite file whose CUSTOM ops BebertBinaryFC / BebertBinaryEmbedding
// are our packed-bit kernels, through the compiled-model C API of the libLiteRt.so that the ai-edge-litert
// wheel ships. The Python side (runtime/litert_session.py) calls the small C API at the bottom.
//
// No LiteRT header is available to this project: this file declares only what it uses, written from the public
// LiteRT C API documentation (litert/c/*.h): opaque handles, int status codes (0 = ok), the 68-byte LiteRtLayout
// (a 32-bit word holding rank:7 and has_strides:1, int32 dimensions[8], uint32 strides[8]), the ranked tensor
// type (int element type, then the layout) and the custom-op kernel struct (Init, GetOutputLayouts, Run,
// Destroy). libLiteRt.so is dlopened at run time from the path the caller gives, so building this library needs
// no LiteRT at all; the Python side refuses wheel versions whose ABI was not checked.
//
// LiteRT behaviours this code depends on (measured with ai-edge-litert 2.3.0): all nodes of one custom op
// share one user_data pointer and Run gets no node identity, so every per-node parameter is a constant input
// tensor; a non-zero status returned from Run or GetOutputLayouts is ignored by the runtime, so errors are
// recorded in our own flag and checked after every run; a missing registration fails only at the first run,
// so the session does a warm-up run when it opens. Every callback is noexcept.
#include <dlfcn.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "../bembed/bembed.h"
#include "../bgemm/bgemm.h"
#include "../core/bitpack.h"

namespace {

// ---- the part of the LiteRT C ABI used here ----------------------------------------------------------------
using Handle = void*;  // LiteRtEnvironment, LiteRtModel, LiteRtOptions, LiteRtCompiledModel, LiteRtTensorBuffer, ...
constexpr int kOk = 0;
constexpr int kErrorRuntimeFailure = 10;  // any non-zero status works for the ignored callbacks
constexpr int kMaxRank = 8;
constexpr int kFloat32 = 1, kInt32 = 2, kUInt8 = 3, kInt64 = 4;  // LiteRtElementType (= TfLiteType values)
constexpr int kLockRead = 0, kLockWrite = 1;
constexpr int kAcceleratorCpu = 1;

struct Layout {
  uint32_t rank_bits;  // rank in bits 0..6, has_strides in bit 7
  int32_t dims[kMaxRank];
  uint32_t strides[kMaxRank];
  int rank() const { return static_cast<int>(rank_bits & 0x7F); }
};
struct RankedType {
  int32_t element_type;
  Layout layout;
};
static_assert(sizeof(Layout) == 68, "LiteRtLayout must be 68 bytes (LiteRT after April 2025)");
static_assert(sizeof(RankedType) == 72, "LiteRtRankedTensorType must be 72 bytes");

struct CustomOpKernel {
  int (*Init)(void* user_data, const void* init_data, size_t init_data_size);
  int (*GetOutputLayouts)(void* user_data, size_t n_in, const Layout* in, size_t n_out, Layout* out);
  int (*Run)(void* user_data, size_t n_in, const Handle* in, size_t n_out, Handle* out);
  int (*Destroy)(void* user_data);
};

struct Api {
  int (*CreateEnvironment)(int, const void*, Handle*);
  void (*DestroyEnvironment)(Handle);
  int (*CreateModelFromFile)(Handle, const char*, Handle*);
  void (*DestroyModel)(Handle);
  int (*CreateOptions)(Handle*);
  void (*DestroyOptions)(Handle);
  int (*SetOptionsHardwareAccelerators)(Handle, int);
  int (*CreateOpaqueOptions)(const char*, void*, void (*)(void*), Handle*);
  int (*AddOpaqueOptions)(Handle, Handle);
  int (*AddCustomOpKernelOption)(Handle, const char*, int, const CustomOpKernel*, void*);
  int (*CreateCompiledModel)(Handle, Handle, Handle, Handle*);
  void (*DestroyCompiledModel)(Handle);
  int (*GetModelSignature)(Handle, size_t, Handle*);
  int (*GetNumSignatureInputs)(Handle, size_t*);
  int (*GetNumSignatureOutputs)(Handle, size_t*);
  int (*GetSignatureInputTensorByIndex)(Handle, size_t, Handle*);
  int (*GetSignatureOutputTensorByIndex)(Handle, size_t, Handle*);
  int (*GetRankedTensorType)(Handle, RankedType*);
  int (*GetCompiledModelInputBufferRequirements)(Handle, size_t, size_t, Handle*);
  int (*GetCompiledModelOutputBufferRequirements)(Handle, size_t, size_t, Handle*);
  int (*CreateManagedTensorBufferFromRequirements)(Handle, const RankedType*, Handle, Handle*);
  int (*GetTensorBufferTensorType)(Handle, RankedType*);
  int (*GetTensorBufferSize)(Handle, size_t*);
  int (*LockTensorBuffer)(Handle, void**, int);
  int (*UnlockTensorBuffer)(Handle);
  void (*DestroyTensorBuffer)(Handle);
  int (*RunCompiledModel)(Handle, size_t, size_t, Handle*, size_t, Handle*);
};

template <typename F>
bool bind(void* lib, const char* name, F& fn, std::string& missing) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) missing += std::string(missing.empty() ? "" : ", ") + name;
  return fn != nullptr;
}

// ---- sessions and their error flag ----------------------------------------------------------------------
struct Session;

enum class OpKind { kLinear, kEmbedding };

struct OpState {  // the user_data of one registered custom op
  Session* session;
  OpKind kind;
};

struct Session {
  const Api* api = nullptr;
  Handle env = nullptr, model = nullptr, options = nullptr, compiled = nullptr;
  std::vector<Handle> inputs, outputs;
  std::vector<size_t> input_bytes, output_bytes;
  OpState linear{this, OpKind::kLinear}, embedding{this, OpKind::kEmbedding};
  int threads = 1;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
  std::string error;

  void fail(const std::string& msg) noexcept {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (!failed.exchange(true)) error = msg;
  }
};

// A locked view of one tensor buffer: shape, element type, host pointer; unlocks on destruction.
struct Locked {
  const Api* api;
  Handle buf;
  RankedType type{};
  void* data = nullptr;
  bool ok = false;
  Locked(const Api* a, Handle b, int mode) : api(a), buf(b) {
    ok = b && api->GetTensorBufferTensorType(b, &type) == kOk && api->LockTensorBuffer(b, &data, mode) == kOk && data;
  }
  ~Locked() {
    if (ok) api->UnlockTensorBuffer(buf);
  }
  int rank() const { return type.layout.rank(); }
  int64_t dim(int i) const { return type.layout.dims[i < 0 ? rank() + i : i]; }
  int64_t count() const {
    int64_t n = 1;
    for (int i = 0; i < rank(); ++i) n *= type.layout.dims[i];
    return n;
  }
  template <typename T>
  T* as() const { return static_cast<T*>(data); }
};

// BebertBinaryFC inputs: x float [..., K], w uint8 [S, N, row_bytes(K)], alpha float [S, N], bias float [N],
// steps float [S], params int32 [4] = (K, act_mode, act_bits, act_symmetric); output y float [..., N].
int run_linear(Session* s, size_t n_in, const Handle* in, size_t n_out, Handle* out) noexcept {
  const Api* api = s->api;
  if (n_in != 6 || n_out != 1) return s->fail("BebertBinaryFC: expected 6 inputs and 1 output"), kErrorRuntimeFailure;
  Locked x(api, in[0], kLockRead), w(api, in[1], kLockRead), a(api, in[2], kLockRead), b(api, in[3], kLockRead),
      st(api, in[4], kLockRead), p(api, in[5], kLockRead), y(api, out[0], kLockWrite);
  if (!(x.ok && w.ok && a.ok && b.ok && st.ok && p.ok && y.ok))
    return s->fail("BebertBinaryFC: cannot read an input or write the output buffer"), kErrorRuntimeFailure;
  if (x.type.element_type != kFloat32 || w.type.element_type != kUInt8 || p.type.element_type != kInt32 ||
      p.count() != 4 || x.rank() < 1 || w.rank() != 3)
    return s->fail("BebertBinaryFC: wrong input types (x float, w uint8 rank 3, params int32[4])"), kErrorRuntimeFailure;
  const int32_t* prm = p.as<int32_t>();
  const int K = static_cast<int>(x.dim(-1)), S = static_cast<int>(w.dim(0)), N = static_cast<int>(w.dim(1));
  const int64_t M = x.count() / (K ? K : 1);
  if (prm[0] != K || w.dim(2) != bebert::row_bytes(K) || a.count() != static_cast<int64_t>(S) * N || b.count() != N ||
      st.count() != S || y.count() != M * N)
    return s->fail("BebertBinaryFC: shape mismatch between x [..,K], w [S,N,row_bytes(K)], alpha [S,N], bias [N], "
                   "steps [S] and y [..,N]"), kErrorRuntimeFailure;
  std::vector<bebert::ActQuant> act(S);
  for (int i = 0; i < S; ++i)
    act[i] = bebert::ActQuant{static_cast<bebert::ActMode>(prm[1]), prm[2], prm[3] != 0, st.as<float>()[i]};
  bebert::BinaryLinearArgs args;
  args.M = static_cast<int>(M); args.N = N; args.K = K; args.S = S;
  args.x = x.as<float>(); args.w = w.as<uint8_t>(); args.alpha = a.as<float>(); args.bias = b.as<float>();
  args.act = act.data(); args.y = y.as<float>(); args.threads = s->threads;
  const std::string err = bebert::validate(args);
  if (!err.empty()) return s->fail("BebertBinaryFC: " + err), kErrorRuntimeFailure;
  if (M > 0) bebert::binary_linear_examples(args, x.rank() >= 2 ? static_cast<int>(x.dim(0)) : 1);
  return kOk;
}

// BebertBinaryEmbedding inputs: ids int64 [B, L], table uint8 [S, V, row_bytes(D)], scales float [S, V],
// base float [L, D] (the position embeddings, added after the lookup); output float [B, L, D].
int run_embedding(Session* s, size_t n_in, const Handle* in, size_t n_out, Handle* out) noexcept {
  const Api* api = s->api;
  if (n_in != 4 || n_out != 1) return s->fail("BebertBinaryEmbedding: expected 4 inputs and 1 output"), kErrorRuntimeFailure;
  Locked ids(api, in[0], kLockRead), t(api, in[1], kLockRead), sc(api, in[2], kLockRead), base(api, in[3], kLockRead),
      y(api, out[0], kLockWrite);
  if (!(ids.ok && t.ok && sc.ok && base.ok && y.ok))
    return s->fail("BebertBinaryEmbedding: cannot read an input or write the output buffer"), kErrorRuntimeFailure;
  if (ids.type.element_type != kInt64 || t.type.element_type != kUInt8 || t.rank() != 3 || sc.rank() != 2 ||
      base.rank() != 2 || ids.rank() < 1)
    return s->fail("BebertBinaryEmbedding: wrong input types or ranks"), kErrorRuntimeFailure;
  const int D = static_cast<int>(base.dim(1));
  const int64_t L = base.dim(0), n = ids.count();
  if (t.dim(2) != bebert::row_bytes(D) || sc.dim(0) != t.dim(0) || sc.dim(1) != t.dim(1) || ids.dim(-1) != L ||
      y.count() != n * D)
    return s->fail("BebertBinaryEmbedding: shape mismatch between ids [B,L], table [S,V,row_bytes(D)], scales [S,V], "
                   "base [L,D] and the output [B,L,D]"), kErrorRuntimeFailure;
  float* o = y.as<float>();
  if (bebert::binary_embedding(ids.as<int64_t>(), n, t.as<uint8_t>(), static_cast<int>(t.dim(0)), t.dim(1), D,
                               sc.as<float>(), o) > 0)
    return s->fail("BebertBinaryEmbedding: token id out of range"), kErrorRuntimeFailure;
  const float* pb = base.as<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < D; ++d) o[i * D + d] += pb[(i % L) * D + d];
  return kOk;
}

int op_init(void*, const void*, size_t) noexcept { return kOk; }
int op_destroy(void*) noexcept { return kOk; }

int op_output_layouts(void* user, size_t n_in, const Layout* in, size_t n_out, Layout* out) noexcept {
  auto* st = static_cast<OpState*>(user);
  if (n_out != 1) return st->session->fail("custom op: expected one output"), kErrorRuntimeFailure;
  Layout l{};
  if (st->kind == OpKind::kLinear) {
    if (n_in != 6 || in[0].rank() < 1 || in[1].rank() != 3)
      return st->session->fail("BebertBinaryFC: bad input layouts"), kErrorRuntimeFailure;
    l = in[0];
    l.dims[in[0].rank() - 1] = in[1].dims[1];
  } else {
    if (n_in != 4 || in[0].rank() < 1 || in[0].rank() >= kMaxRank || in[3].rank() != 2)
      return st->session->fail("BebertBinaryEmbedding: bad input layouts"), kErrorRuntimeFailure;
    l = in[0];
    l.dims[in[0].rank()] = in[3].dims[1];
    l.rank_bits = static_cast<uint32_t>(in[0].rank() + 1);
  }
  l.rank_bits &= 0x7F;  // dense: no strides
  out[0] = l;
  return kOk;
}

int op_run(void* user, size_t n_in, const Handle* in, size_t n_out, Handle* out) noexcept {
  auto* st = static_cast<OpState*>(user);
  return st->kind == OpKind::kLinear ? run_linear(st->session, n_in, in, n_out, out)
                                     : run_embedding(st->session, n_in, in, n_out, out);
}

const CustomOpKernel kKernel = {op_init, op_output_layouts, op_run, op_destroy};

Api g_api;
bool g_api_ok = false;
std::mutex g_api_mutex;

std::string load_api(const char* lib_path) {
  std::lock_guard<std::mutex> lock(g_api_mutex);
  if (g_api_ok) return "";
  void* lib = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) return std::string("cannot load ") + lib_path + ": " + dlerror();
  std::string missing;
  Api& a = g_api;
  bind(lib, "LiteRtCreateEnvironment", a.CreateEnvironment, missing);
  bind(lib, "LiteRtDestroyEnvironment", a.DestroyEnvironment, missing);
  bind(lib, "LiteRtCreateModelFromFile", a.CreateModelFromFile, missing);
  bind(lib, "LiteRtDestroyModel", a.DestroyModel, missing);
  bind(lib, "LiteRtCreateOptions", a.CreateOptions, missing);
  bind(lib, "LiteRtDestroyOptions", a.DestroyOptions, missing);
  bind(lib, "LiteRtSetOptionsHardwareAccelerators", a.SetOptionsHardwareAccelerators, missing);
  bind(lib, "LiteRtCreateOpaqueOptions", a.CreateOpaqueOptions, missing);
  bind(lib, "LiteRtAddOpaqueOptions", a.AddOpaqueOptions, missing);
  bind(lib, "LiteRtAddCustomOpKernelOption", a.AddCustomOpKernelOption, missing);
  bind(lib, "LiteRtCreateCompiledModel", a.CreateCompiledModel, missing);
  bind(lib, "LiteRtDestroyCompiledModel", a.DestroyCompiledModel, missing);
  bind(lib, "LiteRtGetModelSignature", a.GetModelSignature, missing);
  bind(lib, "LiteRtGetNumSignatureInputs", a.GetNumSignatureInputs, missing);
  bind(lib, "LiteRtGetNumSignatureOutputs", a.GetNumSignatureOutputs, missing);
  bind(lib, "LiteRtGetSignatureInputTensorByIndex", a.GetSignatureInputTensorByIndex, missing);
  bind(lib, "LiteRtGetSignatureOutputTensorByIndex", a.GetSignatureOutputTensorByIndex, missing);
  bind(lib, "LiteRtGetRankedTensorType", a.GetRankedTensorType, missing);
  bind(lib, "LiteRtGetCompiledModelInputBufferRequirements", a.GetCompiledModelInputBufferRequirements, missing);
  bind(lib, "LiteRtGetCompiledModelOutputBufferRequirements", a.GetCompiledModelOutputBufferRequirements, missing);
  bind(lib, "LiteRtCreateManagedTensorBufferFromRequirements", a.CreateManagedTensorBufferFromRequirements, missing);
  bind(lib, "LiteRtGetTensorBufferTensorType", a.GetTensorBufferTensorType, missing);
  bind(lib, "LiteRtGetTensorBufferSize", a.GetTensorBufferSize, missing);
  bind(lib, "LiteRtLockTensorBuffer", a.LockTensorBuffer, missing);
  bind(lib, "LiteRtUnlockTensorBuffer", a.UnlockTensorBuffer, missing);
  bind(lib, "LiteRtDestroyTensorBuffer", a.DestroyTensorBuffer, missing);
  bind(lib, "LiteRtRunCompiledModel", a.RunCompiledModel, missing);
  if (!missing.empty()) return std::string(lib_path) + " lacks LiteRT C API functions: " + missing;
  g_api_ok = true;
  return "";
}

void close_session(Session* s) {
  if (!s) return;
  const Api* a = s->api;
  if (a) {
    for (Handle b : s->inputs) if (b) a->DestroyTensorBuffer(b);
    for (Handle b : s->outputs) if (b) a->DestroyTensorBuffer(b);
    if (s->compiled) a->DestroyCompiledModel(s->compiled);
    if (s->options) a->DestroyOptions(s->options);
    if (s->model) a->DestroyModel(s->model);
    if (s->env) a->DestroyEnvironment(s->env);
  }
  delete s;
}

void set_error(char* err, size_t len, const std::string& msg) {
  if (err && len) std::snprintf(err, len, "%s", msg.c_str());
}

int run_session(Session* s, const void* const* in, void* const* out, char* err, size_t errlen) {
  const Api* a = s->api;
  for (size_t i = 0; i < s->inputs.size(); ++i) {
    void* p = nullptr;
    if (a->LockTensorBuffer(s->inputs[i], &p, kLockWrite) != kOk || !p) return set_error(err, errlen, "cannot lock an input buffer"), 1;
    std::memcpy(p, in[i], s->input_bytes[i]);
    a->UnlockTensorBuffer(s->inputs[i]);
  }
  s->failed = false;
  const int st = a->RunCompiledModel(s->compiled, 0, s->inputs.size(), s->inputs.data(), s->outputs.size(), s->outputs.data());
  if (st != kOk) return set_error(err, errlen, "LiteRT run failed with status " + std::to_string(st)), 1;
  if (s->failed) {
    std::lock_guard<std::mutex> lock(s->error_mutex);
    return set_error(err, errlen, "kernel error: " + s->error), 1;
  }
  for (size_t i = 0; i < s->outputs.size(); ++i) {
    void* p = nullptr;
    if (a->LockTensorBuffer(s->outputs[i], &p, kLockRead) != kOk || !p) return set_error(err, errlen, "cannot lock an output buffer"), 1;
    std::memcpy(out[i], p, s->output_bytes[i]);
    a->UnlockTensorBuffer(s->outputs[i]);
  }
  return 0;
}

}  // namespace

extern "C" {

#define BEBERT_EXPORT __attribute__((visibility("default")))

BEBERT_EXPORT const char* bebert_litert_isa() { return bebert::isa_name(bebert::best_isa()); }

// Opens `model_path` with our custom ops registered, on `threads` CPU threads (XNNPACK and our kernels);
// returns 0 and a handle, or non-zero with a one-line message in err.
BEBERT_EXPORT int bebert_litert_open(const char* litert_lib, const char* model_path, int threads, void** handle,
                                     char* err, size_t errlen) {
  *handle = nullptr;
  const std::string e = load_api(litert_lib);
  if (!e.empty()) return set_error(err, errlen, e), 1;
  auto* s = new Session();
  s->api = &g_api;
  s->threads = threads < 1 ? 1 : threads;
  const Api& a = g_api;
  auto fail = [&](const std::string& msg) {
    set_error(err, errlen, msg);
    close_session(s);
    return 1;
  };
  if (a.CreateEnvironment(0, nullptr, &s->env) != kOk) return fail("cannot create a LiteRT environment");
  if (a.CreateModelFromFile(s->env, model_path, &s->model) != kOk) return fail("LiteRT cannot read the model file");
  if (a.CreateOptions(&s->options) != kOk || a.SetOptionsHardwareAccelerators(s->options, kAcceleratorCpu) != kOk)
    return fail("cannot create LiteRT options");
  // CPU (XNNPACK) thread count: an opaque option whose payload is the TOML text LiteRT's CPU options parse.
  const std::string toml = "num_threads = " + std::to_string(s->threads) + "\n";
  char* payload = static_cast<char*>(std::malloc(toml.size() + 1));
  std::memcpy(payload, toml.c_str(), toml.size() + 1);
  Handle opaque = nullptr;
  if (a.CreateOpaqueOptions("xnnpack", payload, std::free, &opaque) != kOk) {
    std::free(payload);
    return fail("cannot create LiteRT CPU options");
  }
  if (a.AddOpaqueOptions(s->options, opaque) != kOk) return fail("cannot add LiteRT CPU options");
  if (a.AddCustomOpKernelOption(s->options, "BebertBinaryFC", 1, &kKernel, &s->linear) != kOk ||
      a.AddCustomOpKernelOption(s->options, "BebertBinaryEmbedding", 1, &kKernel, &s->embedding) != kOk)
    return fail("cannot register the bebert custom ops with LiteRT");
  if (a.CreateCompiledModel(s->env, s->model, s->options, &s->compiled) != kOk)
    return fail("LiteRT cannot compile the model");
  Handle sig = nullptr;
  size_t n_in = 0, n_out = 0;
  if (a.GetModelSignature(s->model, 0, &sig) != kOk || a.GetNumSignatureInputs(sig, &n_in) != kOk ||
      a.GetNumSignatureOutputs(sig, &n_out) != kOk)
    return fail("the model has no readable signature");
  for (int io = 0; io < 2; ++io) {
    const size_t n = io == 0 ? n_in : n_out;
    for (size_t i = 0; i < n; ++i) {
      Handle tensor = nullptr, req = nullptr, buf = nullptr;
      RankedType type{};
      const int st1 = io == 0 ? a.GetSignatureInputTensorByIndex(sig, i, &tensor) : a.GetSignatureOutputTensorByIndex(sig, i, &tensor);
      const int st2 = io == 0 ? a.GetCompiledModelInputBufferRequirements(s->compiled, 0, i, &req)
                              : a.GetCompiledModelOutputBufferRequirements(s->compiled, 0, i, &req);
      size_t bytes = 0;
      if (st1 != kOk || st2 != kOk || a.GetRankedTensorType(tensor, &type) != kOk ||
          a.CreateManagedTensorBufferFromRequirements(s->env, &type, req, &buf) != kOk || a.GetTensorBufferSize(buf, &bytes) != kOk)
        return fail("cannot create the model's input/output buffers");
      (io == 0 ? s->inputs : s->outputs).push_back(buf);
      (io == 0 ? s->input_bytes : s->output_bytes).push_back(bytes);
    }
  }
  // Warm-up run on zeros: a missing kernel or a kernel error shows here, at load, not at the first prediction.
  std::vector<std::vector<uint8_t>> zin, zout;
  std::vector<const void*> pin;
  std::vector<void*> pout;
  for (size_t b : s->input_bytes) zin.emplace_back(b, 0);
  for (size_t b : s->output_bytes) zout.emplace_back(b, 0);
  for (auto& v : zin) pin.push_back(v.data());
  for (auto& v : zout) pout.push_back(v.data());
  char msg[512] = {0};
  if (run_session(s, pin.data(), pout.data(), msg, sizeof msg) != 0) return fail(std::string("warm-up run failed: ") + msg);
  *handle = s;
  return 0;
}

BEBERT_EXPORT int bebert_litert_io_count(void* h, int* n_in, int* n_out) {
  auto* s = static_cast<Session*>(h);
  *n_in = static_cast<int>(s->inputs.size());
  *n_out = static_cast<int>(s->outputs.size());
  return 0;
}

BEBERT_EXPORT size_t bebert_litert_io_bytes(void* h, int is_input, int i) {
  auto* s = static_cast<Session*>(h);
  return is_input ? s->input_bytes[i] : s->output_bytes[i];
}

// Copies the inputs in (signature order, each io_bytes long), runs, copies the outputs out; 0 on success.
BEBERT_EXPORT int bebert_litert_run(void* h, const void* const* inputs, void* const* outputs, char* err, size_t errlen) {
  return run_session(static_cast<Session*>(h), inputs, outputs, err, errlen);
}

BEBERT_EXPORT void bebert_litert_close(void* h) { close_session(static_cast<Session*>(h)); }

BEBERT_EXPORT size_t bebert_litert_layout_size() { return sizeof(Layout); }

}  // extern "C"
