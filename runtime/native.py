"""Paths of our native libraries, built by pip install beside this file (runtime/kernels/ort, kernels/litert).
A module of its own so that session.py and litert_session.py both use it without importing each other."""
from __future__ import annotations

import glob
from pathlib import Path


def native_library(stem: str, what: str) -> Path:
    """Path of one of our native libraries (``stem`` e.g. '_ort_ops'); FileNotFoundError if it was not built."""
    here = Path(__file__).parent
    found = sorted(glob.glob(str(here / f"{stem}*.so")))
    if not found:
        raise FileNotFoundError(f"the bebert {what} library is missing from {here}: reinstall bebert-deploy "
                                "(pip install builds it; a C++ compiler is needed)")
    return Path(found[0])


def ort_ops_library() -> Path:
    """Path of our native ONNX Runtime custom-op library (runtime/kernels/ort)."""
    return native_library("_ort_ops", "ONNX Runtime op")


def litert_ops_library() -> Path:
    """Path of our LiteRT op library and runner (runtime/kernels/litert)."""
    return native_library("_litert_ops", "LiteRT op")
