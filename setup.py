"""C++ extension build (the packed-bit kernels and the native ONNX Runtime op library); metadata lives in
pyproject.toml. Needs a C++17 compiler (g++ or clang) at install time; nothing else."""
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The one list of kernel sources (also read by runtime/kernels/test_kernels.sh and scripts/pi-emulated.sh).
KERNEL_SOURCES = [f"runtime/kernels/{line.strip()}" for line in Path("runtime/kernels/SOURCES").read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
# -ffp-contract=off keeps the activation quantizer's float arithmetic identical to PyTorch's (no fused
# multiply-add contraction); explicit FMA intrinsics in the kernels are unaffected.
CFLAGS = ["-O3", "-std=c++17", "-pthread", "-ffp-contract=off", "-fvisibility=hidden"]
LDFLAGS = ["-pthread"]

ext_modules = [
    Pybind11Extension("bebert_deploy.runtime._kernels", ["runtime/kernels/python/module.cc", *KERNEL_SOURCES],
                      extra_compile_args=CFLAGS, extra_link_args=LDFLAGS, cxx_std=17),
]
ort_sources = ["runtime/kernels/ort/ort_ops.cc"]
if all(__import__("os").path.exists(s) for s in ort_sources):
    # A plain shared library (no Python init): ONNX Runtime dlopens it and calls RegisterCustomOps.
    ext_modules.append(Extension("bebert_deploy.runtime._ort_ops", [*ort_sources, *KERNEL_SOURCES],
                                 extra_compile_args=CFLAGS, extra_link_args=LDFLAGS, language="c++"))
litert_sources = ["runtime/kernels/litert/litert_ops.cc"]
if all(__import__("os").path.exists(s) for s in litert_sources):
    # The LiteRT runner: plain C functions called through ctypes; libLiteRt.so is dlopened at run time.
    ext_modules.append(Extension("bebert_deploy.runtime._litert_ops", [*litert_sources, *KERNEL_SOURCES],
                                 extra_compile_args=CFLAGS, extra_link_args=LDFLAGS + ["-ldl"], language="c++"))


class BuildExt(build_ext):
    def get_export_symbols(self, ext):
        if ext.name.endswith(("_ort_ops", "_litert_ops")):
            return []  # plain shared libraries: no PyInit_ symbol; their C functions are marked visible
        return super().get_export_symbols(ext)


setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
