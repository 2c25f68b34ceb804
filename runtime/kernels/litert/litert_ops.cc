// LiteRT runner of bebert-deploy: runs a .tflite file whose CUSTOM ops BebertBinaryFC / BebertBinaryEmbedding /
// BebertQuantAttention / BebertAddLayerNorm are our kernels (contract: runtime/OPS.md), through the compiled-model C API of the libLiteRt.so
// that the ai-edge-litert wheel ships. The Python side (runtime/litert_session.py) calls the small C API at the
// bottom. The LiteRT declarations live in litert_abi.h; argument checks are the shared kernels/core/op_checks.h.
// libLiteRt.so is dlopened at run time from the path the caller gives, so building this library needs no LiteRT
// at all; the Python side refuses wheel versions whose ABI was not checked.
//
// LiteRT behaviours this code depends on (measured with ai-edge-litert 2.3.0): all nodes of one custom op
// share one user_data pointer and Run gets no node identity, so every per-node parameter is a constant input
// tensor; a non-zero status returned from Run or GetOutputLayouts is ignored by the runtime, so errors are
// recorded in our own flag and checked after every run; a missing registration fails only at the first run,
// so the session does a warm-up run when it opens. Every callback is noexcept.
#include <dlfcn.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../core/op_checks.h"
#include "litert_abi.h"

namespace {

using namespace bebert::litert;  // NOLINT: the ABI names of litert_abi.h
using bebert::ops::DType;
using bebert::ops::Tensor;

template <typename F>
bool bind(void* lib, const char* name, F& fn, std::string& missing) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) missing += std::string(missing.empty() ? "" : ", ") + name;
  return fn != nullptr;
}

// ---- sessions and their error flag ----------------------------------------------------------------------
struct Session;

enum class OpKind { kLinear, kEmbedding, kAttention, kLayerNorm };

struct OpState {  // the user_data of one registered custom op
  Session* session;
  OpKind kind;
};

// A persistent thread that runs one job at a time for a member session running beside others: the same thread
// every run, so the kernels' per-thread scratch buffers (tables, attention heads) are reused, not reallocated.
class Worker {
 public:
  Worker() : thread_([this] { loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = std::move(job);
      pending_ = true;
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [this] { return !pending_; });
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [this] { return (pending_ && job_) || stop_; });
      if (stop_) return;
      auto job = std::move(job_);
      job_ = nullptr;
      lk.unlock();
      job();
      lk.lock();
      pending_ = false;
      cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool pending_ = false, stop_ = false;
  std::thread thread_;  // last: started after the members it uses
};

struct Session {
  std::unique_ptr<Worker> worker;  // first member: destroyed (joined) before the model it runs
  const Api* api = nullptr;
  Handle env = nullptr, model = nullptr, options = nullptr, compiled = nullptr;
  std::vector<Handle> inputs, outputs;
  std::vector<size_t> input_bytes, output_bytes;
  std::vector<RankedType> input_types, output_types;  // as the signature declares them (before any resize)
  OpState linear{this, OpKind::kLinear}, embedding{this, OpKind::kEmbedding}, attention{this, OpKind::kAttention},
      layer_norm{this, OpKind::kLayerNorm};
  int threads = 1;
  int signature = 0;  // the signature (and its subgraph) this session runs
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
    ok = b && api->GetTensorBufferTensorType(b, &type) == kOk && type.layout.rank() <= kMaxRank &&
         api->LockTensorBuffer(b, &data, mode) == kOk && data;
  }
  ~Locked() {
    if (ok) api->UnlockTensorBuffer(buf);
  }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;
  // The view the shared checks take.
  Tensor view() const {
    Tensor t;
    const int e = type.element_type;
    t.type = e == kFloat32 ? DType::kF32 : e == kUInt8 ? DType::kU8 : e == kInt32 ? DType::kI32 : e == kInt64 ? DType::kI64 : DType::kOther;
    t.dims.assign(type.layout.dims, type.layout.dims + type.layout.rank());  // one allocation, not one per dim
    t.data = data;
    return t;
  }
};

// BebertBinaryFC inputs: x float [..., K], w uint8 [S, N, row_bytes(K)], alpha float [S, N], bias float [N],
// steps float [S], params int32 [5] = (K, act_mode, act_bits, act_symmetric, relu) (or [4] without relu, as files
// written before the fused ReLU); output y float [..., N].
int run_linear(Session* s, size_t n_in, const Handle* in, size_t n_out, Handle* out) noexcept {
  const Api* api = s->api;
  const char* op = "BebertBinaryFC: ";
  if (n_in != 6 || n_out != 1) return s->fail(std::string(op) + "expected 6 inputs and 1 output"), kErrorRuntimeFailure;
  Locked x(api, in[0], kLockRead), w(api, in[1], kLockRead), a(api, in[2], kLockRead), b(api, in[3], kLockRead),
      st(api, in[4], kLockRead), p(api, in[5], kLockRead), y(api, out[0], kLockWrite);
  if (!(x.ok && w.ok && a.ok && b.ok && st.ok && p.ok && y.ok))
    return s->fail(std::string(op) + "cannot read an input or write the output buffer"), kErrorRuntimeFailure;
  const Tensor params = p.view();
  if (params.type != DType::kI32 || params.dims.size() != 1 || (params.dims[0] != 4 && params.dims[0] != 5))
    return s->fail(std::string(op) + "params must be int32 [5] = (K, act_mode, act_bits, act_symmetric, relu), got " +
                   bebert::ops::dims_str(params.dims)), kErrorRuntimeFailure;
  const int32_t* prm = static_cast<const int32_t*>(params.data);
  const bebert::ops::ActAttrs attrs{prm[1], prm[2], prm[3], params.dims[0] == 5 ? prm[4] : 0};
  const Tensor tx = x.view(), tw = w.view(), ta = a.view(), tb = b.view(), ts = st.view(), ty = y.view();
  bebert::ops::LinearPlan plan;
  std::string err = bebert::ops::check_linear(tx, tw, ta, tb, ts, attrs, &plan);
  if (err.empty() && prm[0] != plan.K)
    err = "shape mismatch: params say K=" + std::to_string(prm[0]) + " but x has K=" + std::to_string(plan.K);
  if (err.empty() && (ty.type != DType::kF32 || ty.dims != plan.out_dims))
    err = "shape mismatch: output y must be float32 " + bebert::ops::dims_str(plan.out_dims) + ", got " + bebert::ops::dims_str(ty.dims);
  if (err.empty()) err = bebert::ops::run_linear(plan, tx, tw, ta, tb, static_cast<float*>(y.data), s->threads);
  if (!err.empty()) return s->fail(op + err), kErrorRuntimeFailure;
  return kOk;
}

// BebertBinaryEmbedding inputs: ids int64 [B, L], table uint8 [S, V, row_bytes(D)], scales float [S, V],
// base float [L, D] (the position embeddings, added after the lookup); output float [B, L, D].
int run_embedding(Session* s, size_t n_in, const Handle* in, size_t n_out, Handle* out) noexcept {
  const Api* api = s->api;
  const char* op = "BebertBinaryEmbedding: ";
  if (n_in != 4 || n_out != 1) return s->fail(std::string(op) + "expected 4 inputs and 1 output"), kErrorRuntimeFailure;
  Locked ids(api, in[0], kLockRead), t(api, in[1], kLockRead), sc(api, in[2], kLockRead), base(api, in[3], kLockRead),
      y(api, out[0], kLockWrite);
  if (!(ids.ok && t.ok && sc.ok && base.ok && y.ok))
    return s->fail(std::string(op) + "cannot read an input or write the output buffer"), kErrorRuntimeFailure;
  const Tensor tids = ids.view(), tt = t.view(), tsc = sc.view(), tbase = base.view(), ty = y.view();
  bebert::ops::EmbeddingPlan plan;
  std::string err = bebert::ops::check_embedding(tids, tt, tsc, &tbase, 0, &plan);
  if (err.empty() && (ty.type != DType::kF32 || ty.dims != plan.out_dims))
    err = "shape mismatch: output must be float32 " + bebert::ops::dims_str(plan.out_dims) + ", got " + bebert::ops::dims_str(ty.dims);
  if (!err.empty()) return s->fail(op + err), kErrorRuntimeFailure;
  bebert::ops::run_embedding(plan, tids, tt, tsc, &tbase, static_cast<float*>(y.data));
  return kOk;
}

// BebertQuantAttention inputs: q, k, v float [B, L, H], mask_add float [B, 1, 1, L], steps float [4] (q, k, v,
// probabilities), params int32 [2] = (num_heads, act_bits); output float [B, L, H]. params int32 [3] =
// (num_heads, act_bits, 1): q, k, v are [B, L, 3 H] column ranges of one packed Q/K/V tensor (OPS.md); the output
// layout, which LiteRT asks for from the input layouts alone, follows from params' length.
int run_attention(Session* s, size_t n_in, const Handle* in, size_t n_out, Handle* out) noexcept {
  const Api* api = s->api;
  const char* op = "BebertQuantAttention: ";
  if (n_in != 6 || n_out != 1) return s->fail(std::string(op) + "expected 6 inputs and 1 output"), kErrorRuntimeFailure;
  Locked q(api, in[0], kLockRead), k(api, in[1], kLockRead), v(api, in[2], kLockRead), m(api, in[3], kLockRead),
      st(api, in[4], kLockRead), p(api, in[5], kLockRead), y(api, out[0], kLockWrite);
  if (!(q.ok && k.ok && v.ok && m.ok && st.ok && p.ok && y.ok))
    return s->fail(std::string(op) + "cannot read an input or write the output buffer"), kErrorRuntimeFailure;
  const Tensor params = p.view();
  if (params.type != DType::kI32 || params.dims.size() != 1 || (params.dims[0] != 2 && params.dims[0] != 3))
    return s->fail(std::string(op) + "params must be int32 [2] = (num_heads, act_bits) or [3] = (num_heads, act_bits, 1), "
                   "got " + bebert::ops::dims_str(params.dims)), kErrorRuntimeFailure;
  const int32_t* prm = static_cast<const int32_t*>(params.data);
  const bool packed = params.dims[0] == 3;
  if (packed && prm[2] != 1)
    return s->fail(std::string(op) + "params[2] (packed q/k/v) must be 1, got " + std::to_string(prm[2])), kErrorRuntimeFailure;
  const Tensor ty = y.view();
  bebert::ops::AttentionPlan plan;
  std::string err =
      bebert::ops::check_attention(q.view(), k.view(), v.view(), m.view(), st.view(), prm[0], prm[1], &plan, packed);
  if (err.empty() && (ty.type != DType::kF32 || ty.dims != plan.out_dims))
    err = "shape mismatch: output must be float32 " + bebert::ops::dims_str(plan.out_dims) + ", got " + bebert::ops::dims_str(ty.dims);
  if (err.empty()) err = bebert::ops::run_attention(plan, static_cast<float*>(y.data), s->threads);
  if (!err.empty()) return s->fail(op + err), kErrorRuntimeFailure;
  return kOk;
}

// BebertAddLayerNorm inputs: x, residual float [..., H], gamma, beta float [H], eps float [1]; output like x.
int run_layer_norm(Session* s, size_t n_in, const Handle* in, size_t n_out, Handle* out) noexcept {
  const Api* api = s->api;
  const char* op = "BebertAddLayerNorm: ";
  if (n_in != 5 || n_out != 1) return s->fail(std::string(op) + "expected 5 inputs and 1 output"), kErrorRuntimeFailure;
  Locked x(api, in[0], kLockRead), r(api, in[1], kLockRead), g(api, in[2], kLockRead), b(api, in[3], kLockRead),
      e(api, in[4], kLockRead), y(api, out[0], kLockWrite);
  if (!(x.ok && r.ok && g.ok && b.ok && e.ok && y.ok))
    return s->fail(std::string(op) + "cannot read an input or write the output buffer"), kErrorRuntimeFailure;
  const Tensor ty = y.view();
  bebert::ops::LayerNormPlan plan;
  std::string err = bebert::ops::check_add_layer_norm(x.view(), r.view(), g.view(), b.view(), e.view(), &plan);
  if (err.empty() && (ty.type != DType::kF32 || ty.dims != plan.out_dims))
    err = "shape mismatch: output must be float32 " + bebert::ops::dims_str(plan.out_dims) + ", got " + bebert::ops::dims_str(ty.dims);
  if (!err.empty()) return s->fail(op + err), kErrorRuntimeFailure;
  bebert::ops::run_add_layer_norm(plan, static_cast<float*>(y.data), s->threads);
  return kOk;
}

int op_init(void*, const void*, size_t) noexcept { return kOk; }
int op_destroy(void*) noexcept { return kOk; }

// Output layouts from the input layouts; shapes that do not fit are reported by Run, which sees the data too.
int op_output_layouts(void* user, size_t n_in, const Layout* in, size_t n_out, Layout* out) noexcept {
  auto* st = static_cast<OpState*>(user);
  if (n_out != 1) return st->session->fail("custom op: expected one output"), kErrorRuntimeFailure;
  Layout l{};
  if (st->kind == OpKind::kLinear) {
    if (n_in != 6 || in[0].rank() < 1 || in[0].rank() > kMaxRank || in[1].rank() != 3)
      return st->session->fail("BebertBinaryFC: x must have rank 1..8 and w rank 3"), kErrorRuntimeFailure;
    l = in[0];
    l.dims[in[0].rank() - 1] = in[1].dims[1];
  } else if (st->kind == OpKind::kAttention) {
    if (n_in != 6 || in[0].rank() != 3 || in[5].rank() != 1)
      return st->session->fail("BebertQuantAttention: q must have rank 3 and params rank 1"), kErrorRuntimeFailure;
    l = in[0];
    if (in[5].dims[0] == 3) l.dims[2] = in[0].dims[2] / 3;  // packed q/k/v [B, L, 3 H] -> [B, L, H]
  } else if (st->kind == OpKind::kLayerNorm) {
    if (n_in != 5 || in[0].rank() < 1 || in[0].rank() > kMaxRank)
      return st->session->fail("BebertAddLayerNorm: x must have rank 1..8"), kErrorRuntimeFailure;
    l = in[0];
  } else {
    if (n_in != 4 || in[0].rank() < 1 || in[0].rank() >= kMaxRank || in[3].rank() != 2)
      return st->session->fail("BebertBinaryEmbedding: ids must have rank 1..7 and base rank 2"), kErrorRuntimeFailure;
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
  switch (st->kind) {
    case OpKind::kLinear: return run_linear(st->session, n_in, in, n_out, out);
    case OpKind::kEmbedding: return run_embedding(st->session, n_in, in, n_out, out);
    case OpKind::kLayerNorm: return run_layer_norm(st->session, n_in, in, n_out, out);
    default: return run_attention(st->session, n_in, in, n_out, out);
  }
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
  bind(lib, "LiteRtCompiledModelResizeInputTensor", a.CompiledModelResizeInputTensor, missing);
  if (!missing.empty()) return std::string(lib_path) + " lacks LiteRT C API functions: " + missing;
  g_api_ok = true;
  return "";
}

void close_session(Session* s) {
  if (!s) return;
  s->worker.reset();  // joined while the model it ran still exists
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

// (Re)creates the input and output buffers from the compiled model's current requirements and the signature types
// (with ``length`` as the last dim of every input when > 0: the sequence length after a resize).
bool make_buffers(Session* s, int length = 0) {
  const Api& a = *s->api;
  for (Handle b : s->inputs) if (b) a.DestroyTensorBuffer(b);
  for (Handle b : s->outputs) if (b) a.DestroyTensorBuffer(b);
  s->inputs.clear(), s->outputs.clear(), s->input_bytes.clear(), s->output_bytes.clear();
  for (int io = 0; io < 2; ++io) {
    const auto& types = io == 0 ? s->input_types : s->output_types;
    for (size_t i = 0; i < types.size(); ++i) {
      RankedType type = types[i];
      if (io == 0 && length > 0 && type.layout.rank() > 0) type.layout.dims[type.layout.rank() - 1] = length;
      Handle req = nullptr, buf = nullptr;
      size_t bytes = 0;
      const int st = io == 0 ? a.GetCompiledModelInputBufferRequirements(s->compiled, s->signature, i, &req)
                             : a.GetCompiledModelOutputBufferRequirements(s->compiled, s->signature, i, &req);
      if (st != kOk || a.CreateManagedTensorBufferFromRequirements(s->env, &type, req, &buf) != kOk) return false;
      (io == 0 ? s->inputs : s->outputs).push_back(buf);
      if (a.GetTensorBufferSize(buf, &bytes) != kOk) return false;
      (io == 0 ? s->input_bytes : s->output_bytes).push_back(bytes);
    }
  }
  return true;
}

int run_session(Session* s, const void* const* in, void* const* out, char* err, size_t errlen) {
  const Api* a = s->api;
  if (s->inputs.size() != s->input_types.size() || s->outputs.size() != s->output_types.size())
    return set_error(err, errlen, "the model's buffers are not ready (a failed resize): resize again"), 1;
  for (size_t i = 0; i < s->inputs.size(); ++i) {
    void* p = nullptr;
    if (a->LockTensorBuffer(s->inputs[i], &p, kLockWrite) != kOk || !p) return set_error(err, errlen, "cannot lock an input buffer"), 1;
    std::memcpy(p, in[i], s->input_bytes[i]);
    a->UnlockTensorBuffer(s->inputs[i]);
  }
  s->failed = false;
  const int st = a->RunCompiledModel(s->compiled, s->signature, s->inputs.size(), s->inputs.data(), s->outputs.size(), s->outputs.data());
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

int resize_session(Session* s, int length, char* err, size_t errlen) {
  const Api& a = *s->api;
  if (length < 1) return set_error(err, errlen, "sequence length must be >= 1"), 1;
  const int dims[2] = {1, length};
  for (size_t i = 0; i < s->input_types.size(); ++i) {
    if (s->input_types[i].layout.rank() != 2) return set_error(err, errlen, "resizable inputs must have rank 2"), 1;
    const int st = a.CompiledModelResizeInputTensor(s->compiled, s->signature, i, dims, 2);
    if (st != kOk)
      return set_error(err, errlen, "LiteRT cannot resize input " + std::to_string(i) + " to [1, " + std::to_string(length) +
                                        "] (status " + std::to_string(st) + "; a fixed-length file?)"), 1;
  }
  if (!make_buffers(s, length)) return set_error(err, errlen, "cannot recreate the buffers after a resize"), 1;
  return 0;
}

}  // namespace

extern "C" {

#define BEBERT_EXPORT __attribute__((visibility("default")))

BEBERT_EXPORT const char* bebert_litert_isa() { return bebert::isa_name(bebert::best_isa()); }

// Opens signature number `signature` of `model_path` with our custom ops registered, on `threads` CPU threads
// (XNNPACK and our kernels); returns 0 and a handle, or non-zero with a one-line message in err.
BEBERT_EXPORT int bebert_litert_open(const char* litert_lib, const char* model_path, int threads, int signature,
                                     void** handle, char* err, size_t errlen) {
  *handle = nullptr;
  const std::string e = load_api(litert_lib);
  if (!e.empty()) return set_error(err, errlen, e), 1;
  auto* s = new Session();
  s->api = &g_api;
  s->threads = threads < 1 ? 1 : threads;
  s->signature = signature;
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
      a.AddCustomOpKernelOption(s->options, "BebertBinaryEmbedding", 1, &kKernel, &s->embedding) != kOk ||
      a.AddCustomOpKernelOption(s->options, "BebertQuantAttention", 1, &kKernel, &s->attention) != kOk ||
      a.AddCustomOpKernelOption(s->options, "BebertAddLayerNorm", 1, &kKernel, &s->layer_norm) != kOk)
    return fail("cannot register the bebert custom ops with LiteRT");
  if (a.CreateCompiledModel(s->env, s->model, s->options, &s->compiled) != kOk)
    return fail("LiteRT cannot compile the model");
  Handle sig = nullptr;
  size_t n_in = 0, n_out = 0;
  if (signature < 0 || a.GetModelSignature(s->model, signature, &sig) != kOk || a.GetNumSignatureInputs(sig, &n_in) != kOk ||
      a.GetNumSignatureOutputs(sig, &n_out) != kOk)
    return fail("the model has no readable signature");
  for (int io = 0; io < 2; ++io) {
    const size_t n = io == 0 ? n_in : n_out;
    for (size_t i = 0; i < n; ++i) {
      Handle tensor = nullptr;
      RankedType type{};
      const int st = io == 0 ? a.GetSignatureInputTensorByIndex(sig, i, &tensor) : a.GetSignatureOutputTensorByIndex(sig, i, &tensor);
      if (st != kOk || a.GetRankedTensorType(tensor, &type) != kOk) return fail("cannot read the model's signature tensors");
      (io == 0 ? s->input_types : s->output_types).push_back(type);
    }
  }
  if (!make_buffers(s)) return fail("cannot create the model's input/output buffers");
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

// Byte size of signature input / output i; 0 when there is no such tensor.
BEBERT_EXPORT size_t bebert_litert_io_bytes(void* h, int is_input, int i) {
  const auto& bytes = is_input ? static_cast<Session*>(h)->input_bytes : static_cast<Session*>(h)->output_bytes;
  return i >= 0 && static_cast<size_t>(i) < bytes.size() ? bytes[i] : 0;
}

// Copies the inputs in (signature order, each io_bytes long), runs, copies the outputs out; 0 on success.
BEBERT_EXPORT int bebert_litert_run(void* h, const void* const* inputs, void* const* outputs, char* err, size_t errlen) {
  return run_session(static_cast<Session*>(h), inputs, outputs, err, errlen);
}

// Runs n sessions at once (after resizing each to [1, length] when length > 0, as bebert_litert_resize), session i
// on inputs[i] / outputs[i] (as bebert_litert_run), sessions 1..n-1 each on a
// persistent thread of its own and session 0 on the caller; 0 when all succeed, else the first failure's message.
// Ensemble members exported as signatures of one file run side by side this way, each on one thread: no fork/join
// between the threads per op. (Members with several threads each would queue on the kernels' shared pool, which
// serialises multi-threaded calls: the runner uses this only with one thread per member.)
BEBERT_EXPORT int bebert_litert_run_parallel(void* const* hs, int n, int length, const void* const* const* inputs,
                                             void* const* const* outputs, char* err, size_t errlen) {
  if (n < 1) return set_error(err, errlen, "no sessions to run"), 1;
  std::vector<std::array<char, 512>> errs(static_cast<size_t>(n));
  std::vector<int> rc(static_cast<size_t>(n), 0);
  // length > 0: each session first resizes its inputs to [1, length] on its own thread (a resize re-plans the
  // member's graph: ~60 us each on Zen 4, paid side by side)
  const auto job = [&](int i) {
    auto* s = static_cast<Session*>(hs[i]);
    rc[i] = length > 0 ? resize_session(s, length, errs[i].data(), 512) : 0;
    if (!rc[i]) rc[i] = run_session(s, inputs[i], outputs[i], errs[i].data(), 512);
  };
  for (int i = 1; i < n; ++i) {
    auto* s = static_cast<Session*>(hs[i]);
    if (!s->worker) s->worker.reset(new Worker());
    s->worker->submit([&job, i] { job(i); });
  }
  job(0);
  for (int i = 1; i < n; ++i) static_cast<Session*>(hs[i])->worker->wait();
  for (int i = 0; i < n; ++i)
    if (rc[i]) return set_error(err, errlen, errs[i].data()), 1;
  return 0;
}

// Resizes every input to [1, length] (files exported with a dynamic sequence length: signature dims [1, -1]) and
// recreates the buffers; 0 on success. Buffers are then io_bytes long for the new length.
BEBERT_EXPORT int bebert_litert_resize(void* h, int length, char* err, size_t errlen) {
  return resize_session(static_cast<Session*>(h), length, err, errlen);
}

BEBERT_EXPORT void bebert_litert_close(void* h) { close_session(static_cast<Session*>(h)); }

BEBERT_EXPORT size_t bebert_litert_layout_size() { return sizeof(Layout); }

}  // extern "C"
