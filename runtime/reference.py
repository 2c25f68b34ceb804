"""numpy reference of the packed-bit BinaryLinear op, written from the definitions (unpacked signs, float64).

Independent of the C++ kernels: the tests compare every ISA path against it, and the exporters' parity tests
use it to check a lowered layer without a runtime.
"""
from __future__ import annotations

import numpy as np

from .bitpack import unpack_bits
from .quant_levels import lsq_levels


def quantize_activations(x: np.ndarray, mode: str, bits: int, symmetric: bool, step: float) -> np.ndarray:
    """What the op's activation quantizer feeds the product: float32 [M, K] -> float64 [M, K].

    float: x; sign: +-1 with sign(0)=+1; int: LSQ codes times step (+ min(x) when asymmetric), computed with
    float32 division and round-half-even exactly as PyTorch and the kernels do.
    """
    x = np.asarray(x, np.float32)
    if mode == "float":
        return x.astype(np.float64)
    if mode == "sign":
        return np.where(x < 0, -1.0, 1.0)
    if mode != "int":
        raise ValueError(f"unknown activation mode {mode!r}")
    qn, qp = lsq_levels(bits, symmetric)
    offset = np.float32(0.0) if symmetric else x.min()
    q = np.clip(np.round((x - offset) / np.float32(step)), qn, qp)
    return np.float64(step) * q + np.float64(offset)


def binary_linear_ref(x: np.ndarray, w: np.ndarray, alpha: np.ndarray, bias: np.ndarray | None, mode: str = "float",
                      bits: int = 32, symmetric: bool = True, steps=None) -> np.ndarray:
    """y[M, N] = sum_s act_s(x) @ (alpha[s, :, None] * sign(w[s]))^T + bias, float64.

    x float32 [M, K]; w uint8 [S, N, row_bytes(K)]; alpha float32 [S, N]; bias float32 [N] or None;
    steps float32 [S] (int mode).
    """
    x = np.asarray(x, np.float32)
    k = x.shape[1]
    signs = unpack_bits(w, k).astype(np.float64)  # [S, N, K]
    steps = np.ones(signs.shape[0]) if steps is None else np.asarray(steps, np.float32)
    y = np.zeros((x.shape[0], signs.shape[1]))
    for s in range(signs.shape[0]):
        xq = quantize_activations(x, mode, bits, symmetric, float(steps[s]))
        y += (xq @ signs[s].T) * np.asarray(alpha[s], np.float64)
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y
