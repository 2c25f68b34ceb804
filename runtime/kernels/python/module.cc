// Python binding of the packed-bit kernels: bebert_deploy.runtime._kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "../bgemm/bgemm.h"
#include "../core/bitpack.h"

namespace py = pybind11;
using namespace bebert;

namespace {

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using U8 = py::array_t<uint8_t, py::array::c_style>;

Isa parse_isa(const std::string& s) {
  if (s == "auto") return Isa::kAuto;
  if (s == "scalar") return Isa::kScalar;
  if (s == "avx2") return Isa::kAvx2;
  if (s == "neon") return Isa::kNeon;
  throw std::invalid_argument("unknown isa '" + s + "' (auto, scalar, avx2, neon)");
}

ActMode parse_mode(const std::string& s) {
  if (s == "float") return ActMode::kFloat;
  if (s == "int") return ActMode::kInt;
  if (s == "sign") return ActMode::kSign;
  throw std::invalid_argument("unknown activation mode '" + s + "' (float, int, sign)");
}

py::array_t<float> binary_linear_py(F32 x, U8 w, F32 alpha, py::object bias, const std::string& act_mode, int act_bits,
                                    bool act_symmetric, F32 act_steps, int threads, const std::string& isa) {
  if (x.ndim() != 2) throw std::invalid_argument("x must be float32 [M, K]");
  if (w.ndim() != 3) throw std::invalid_argument("w must be uint8 [S, N, row_bytes(K)]");
  const int M = int(x.shape(0)), K = int(x.shape(1)), S = int(w.shape(0)), N = int(w.shape(1));
  if (w.shape(2) != row_bytes(K))
    throw std::invalid_argument("w rows have " + std::to_string(w.shape(2)) + " bytes, expected " +
                                std::to_string(row_bytes(K)) + " for K=" + std::to_string(K));
  if (alpha.ndim() != 2 || alpha.shape(0) != S || alpha.shape(1) != N)
    throw std::invalid_argument("alpha must be float32 [S, N]");
  if (act_steps.ndim() != 1 || act_steps.shape(0) != S) throw std::invalid_argument("act_steps must be float32 [S]");
  F32 b;
  const float* bptr = nullptr;
  if (!bias.is_none()) {
    b = bias.cast<F32>();
    if (b.ndim() != 1 || b.shape(0) != N) throw std::invalid_argument("bias must be float32 [N]");
    bptr = b.data();
  }
  std::vector<ActQuant> act(S);
  for (int s = 0; s < S; ++s) act[s] = ActQuant{parse_mode(act_mode), act_bits, act_symmetric, act_steps.data()[s]};
  py::array_t<float> y({M, N});
  BinaryLinearArgs a;
  a.M = M; a.N = N; a.K = K; a.S = S; a.x = x.data(); a.w = w.data(); a.alpha = alpha.data(); a.bias = bptr;
  a.act = act.data(); a.y = y.mutable_data(); a.threads = threads;
  const std::string err = validate(a);
  if (!err.empty()) throw std::invalid_argument(err);
  const Isa want = parse_isa(isa);
  if (want != Isa::kAuto && !isa_supported(want))
    throw std::invalid_argument(std::string("isa '") + isa + "' is not supported on this CPU");
  {
    py::gil_scoped_release release;
    binary_linear(a, want);
  }
  return y;
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "Packed-bit binary linear kernels (see runtime/LAYOUT.md)";
  m.def("binary_linear", &binary_linear_py, py::arg("x"), py::arg("w"), py::arg("alpha"), py::arg("bias"),
        py::arg("act_mode") = "float", py::arg("act_bits") = 32, py::arg("act_symmetric") = true,
        py::arg("act_steps"), py::arg("threads") = 1, py::arg("isa") = "auto",
        "y[M, N] = sum_s act_s(x[M, K]) @ (alpha[s, :, None] * sign(w[s]))^T + bias; see bgemm.h");
  m.def("best_isa", []() { return std::string(isa_name(best_isa())); });
  m.def("supported_isas", []() {
    std::vector<std::string> out;
    for (Isa i : {Isa::kScalar, Isa::kAvx2, Isa::kNeon})
      if (isa_supported(i)) out.push_back(isa_name(i));
    return out;
  });
}
