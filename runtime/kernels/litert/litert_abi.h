// The part of LiteRT's C API (libLiteRt.so of the ai-edge-litert wheel) that litert_ops.cc uses, declared by hand.
//
// No LiteRT header is available to this project: these declarations were written from the public LiteRT C API
// documentation and headers (litert/c/*.h) and confirmed by experiment with ai-edge-litert 2.3.0: opaque
// handles, int status codes (0 = ok), the 68-byte LiteRtLayout (a 32-bit word holding rank:7 and
// has_strides:1, int32 dimensions[8], uint32 strides[8]), the ranked tensor type (int element type, then the
// layout) and the custom-op kernel struct (Init, GetOutputLayouts, Run, Destroy). Layouts of LiteRT before April
// 2025 were 48 bytes: the static_asserts below and the Python side's wheel-version check keep a mismatched ABI
// from being used.
#pragma once
#include <cstddef>
#include <cstdint>

namespace bebert {
namespace litert {

using Handle = void*;  // LiteRtEnvironment, LiteRtModel, LiteRtOptions, LiteRtCompiledModel, LiteRtTensorBuffer, ...
constexpr int kOk = 0;
constexpr int kErrorRuntimeFailure = 10;  // any non-zero status works for the (ignored) callback results
constexpr int kMaxRank = 8;
constexpr int kFloat32 = 1, kInt32 = 2, kUInt8 = 3, kInt64 = 4;  // LiteRtElementType (= TfLiteType values)
constexpr int kLockRead = 0, kLockWrite = 1;                     // LiteRtTensorBufferLockMode
constexpr int kAcceleratorCpu = 1;                               // LiteRtHwAccelerators

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

// LiteRtCustomOpKernel: what LiteRtAddCustomOpKernelOption registers for one custom op name.
struct CustomOpKernel {
  int (*Init)(void* user_data, const void* init_data, size_t init_data_size);
  int (*GetOutputLayouts)(void* user_data, size_t n_in, const Layout* in, size_t n_out, Layout* out);
  int (*Run)(void* user_data, size_t n_in, const Handle* in, size_t n_out, Handle* out);
  int (*Destroy)(void* user_data);
};

// The functions used, bound by name with dlsym (litert_ops.cc: load_api).
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
  // (compiled model, signature index, input index, dims, rank): strict resize of an input whose signature dim is -1
  int (*CompiledModelResizeInputTensor)(Handle, size_t, size_t, const int*, size_t);
};

}  // namespace litert
}  // namespace bebert
