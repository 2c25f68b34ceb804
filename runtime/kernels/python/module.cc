// Python binding of the packed-bit kernels: bebert_deploy.runtime._kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "../core/op_checks.h"

namespace py = pybind11;
using namespace bebert;

namespace {

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using U8 = py::array_t<uint8_t, py::array::c_style>;

Isa parse_isa(const std::string& s) {
  if (s == "auto") return Isa::kAuto;
  if (s == "scalar") return Isa::kScalar;
  if (s == "avx2") return Isa::kAvx2;
  if (s == "avx512") return Isa::kAvx512;
  if (s == "neon") return Isa::kNeon;
  throw std::invalid_argument("unknown isa '" + s + "' (auto, scalar, avx2, avx512, neon)");
}

ActMode parse_mode(const std::string& s) {
  if (s == "float") return ActMode::kFloat;
  if (s == "int") return ActMode::kInt;
  if (s == "sign") return ActMode::kSign;
  throw std::invalid_argument("unknown activation mode '" + s + "' (float, int, sign)");
}

// Wraps a numpy array as the view the shared op checks take (kernels/core/op_checks.h).
template <typename A>
ops::Tensor view(const A& a, ops::DType type) {
  ops::Tensor t;
  t.type = type;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) t.dims.push_back(a.shape(i));
  t.data = a.data();
  return t;
}

py::array_t<float> binary_linear_py(F32 x, U8 w, F32 alpha, py::object bias, const std::string& act_mode, int act_bits,
                                    bool act_symmetric, F32 act_steps, int threads, const std::string& isa, bool relu) {
  if (x.ndim() != 2) throw std::invalid_argument("x must be float32 [M, K]");
  F32 b;
  ops::Tensor tb;  // no data: no bias
  if (!bias.is_none()) {
    b = bias.cast<F32>();
    tb = view(b, ops::DType::kF32);
  }
  const ops::ActAttrs attrs{static_cast<int64_t>(parse_mode(act_mode)), act_bits, act_symmetric ? 1 : 0, relu ? 1 : 0};
  const ops::Tensor tx = view(x, ops::DType::kF32), tw = view(w, ops::DType::kU8), ta = view(alpha, ops::DType::kF32),
                    ts = view(act_steps, ops::DType::kF32);
  ops::LinearPlan plan;
  std::string err = ops::check_linear(tx, tw, ta, tb, ts, attrs, &plan);
  if (!err.empty()) throw std::invalid_argument(err);
  if (threads < 1) throw std::invalid_argument("threads must be >= 1");
  const Isa want = parse_isa(isa);
  if (want != Isa::kAuto && !isa_supported(want))
    throw std::invalid_argument(std::string("isa '") + isa + "' is not supported on this CPU");
  py::array_t<float> y({plan.M, plan.N});
  BinaryLinearArgs a;
  a.M = plan.M; a.N = plan.N; a.K = plan.K; a.S = plan.S; a.x = x.data(); a.w = w.data(); a.alpha = alpha.data();
  a.bias = static_cast<const float*>(tb.data); a.act = plan.act.data(); a.y = y.mutable_data(); a.threads = threads;
  a.relu = plan.relu;
  if (plan.M == 0) return y;
  err = validate(a);
  if (!err.empty()) throw std::invalid_argument(err);
  {
    py::gil_scoped_release release;
    binary_linear(a, want);
  }
  return y;
}

py::array_t<float> quant_attention_py(F32 q, F32 k, F32 v, F32 mask_add, F32 steps, int heads, int bits, int threads,
                                      const std::string& isa, bool packed_qkv) {
  ops::AttentionPlan plan;
  std::string err = ops::check_attention(view(q, ops::DType::kF32), view(k, ops::DType::kF32), view(v, ops::DType::kF32),
                                         view(mask_add, ops::DType::kF32), view(steps, ops::DType::kF32), heads, bits, &plan,
                                         packed_qkv);
  if (!err.empty()) throw std::invalid_argument(err);
  if (threads < 1) throw std::invalid_argument("threads must be >= 1");
  const Isa want = parse_isa(isa);
  if (want != Isa::kAuto && !isa_supported(want))
    throw std::invalid_argument(std::string("isa '") + isa + "' is not supported on this CPU");
  py::array_t<float> out(std::vector<py::ssize_t>(plan.out_dims.begin(), plan.out_dims.end()));
  {
    py::gil_scoped_release release;
    err = ops::run_attention(plan, out.mutable_data(), threads, want);
  }
  if (!err.empty()) throw std::invalid_argument(err);
  return out;
}

py::array_t<float> add_layer_norm_py(F32 x, F32 residual, F32 gamma, F32 beta, float eps, int threads) {
  ops::LayerNormPlan plan;
  F32 e(std::vector<py::ssize_t>{1});
  e.mutable_data()[0] = eps;
  const std::string err = ops::check_add_layer_norm(view(x, ops::DType::kF32), view(residual, ops::DType::kF32),
                                                    view(gamma, ops::DType::kF32), view(beta, ops::DType::kF32),
                                                    view(e, ops::DType::kF32), &plan);
  if (!err.empty()) throw std::invalid_argument(err);
  if (threads < 1) throw std::invalid_argument("threads must be >= 1");
  py::array_t<float> out(std::vector<py::ssize_t>(plan.out_dims.begin(), plan.out_dims.end()));
  {
    py::gil_scoped_release release;
    ops::run_add_layer_norm(plan, out.mutable_data(), threads);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "Packed-bit binary linear kernels (see runtime/LAYOUT.md)";
  m.def("binary_linear", &binary_linear_py, py::arg("x"), py::arg("w"), py::arg("alpha"), py::arg("bias"),
        py::arg("act_mode") = "float", py::arg("act_bits") = 32, py::arg("act_symmetric") = true,
        py::arg("act_steps"), py::arg("threads") = 1, py::arg("isa") = "auto", py::arg("relu") = false,
        "y[M, N] = sum_s act_s(x[M, K]) @ (alpha[s, :, None] * sign(w[s]))^T + bias (then max(y, 0) with relu); "
        "see bgemm.h");
  m.def("quant_attention", &quant_attention_py, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask_add"),
        py::arg("steps"), py::arg("heads"), py::arg("bits") = 4, py::arg("threads") = 1, py::arg("isa") = "auto",
        py::arg("packed_qkv") = false,
        "The QuantAttention op (attention.h): q, k, v float32 [B, L, H], mask_add [B, 1, 1, L], steps [4]; with "
        "packed_qkv, q, k, v are [B, L, 3H] and the op reads Q, K, V from their column ranges");
  m.def("add_layer_norm", &add_layer_norm_py, py::arg("x"), py::arg("residual"), py::arg("gamma"), py::arg("beta"),
        py::arg("eps"), py::arg("threads") = 1,
        "The AddLayerNorm op (layernorm.h): LayerNorm(x + residual) over the last axis, gamma / beta float32 [H]");
  m.def("best_isa", []() { return std::string(isa_name(best_isa())); });
  m.def("supported_isas", []() {
    std::vector<std::string> out;
    for (Isa i : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon})
      if (isa_supported(i)) out.push_back(isa_name(i));
    return out;
  });
}
