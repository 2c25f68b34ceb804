"""The packed-bit weight layout, Python side (numpy only). Its C++ twin is runtime/kernels/core/bitpack.h and
the prose is runtime/LAYOUT.md: bit 1 <=> -1, LSB-first within bytes, rows zero-padded to 64-bit words."""
from __future__ import annotations

import numpy as np

WORD_BITS = 64


def row_bytes(k: int) -> int:
    """Bytes per packed row of ``k`` weights: ceil(k / 64) * 8."""
    return (k + WORD_BITS - 1) // WORD_BITS * 8


def pack_bits(w: np.ndarray) -> np.ndarray:
    """Pack the signs of ``w`` float [..., N, K] into uint8 [..., N, row_bytes(K)] (sign(0) = +1 -> bit 0)."""
    w = np.asarray(w)
    if w.ndim < 2:
        raise ValueError(f"pack_bits expects a [..., N, K] array, got shape {w.shape}")
    k = w.shape[-1]
    packed = np.packbits(w < 0, axis=-1, bitorder="little")
    pad = row_bytes(k) - packed.shape[-1]
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:-1] + (pad,), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed)


def unpack_bits(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of pack_bits: uint8 [..., N, row_bytes(k)] -> float32 [..., N, k] of +-1."""
    packed = np.asarray(packed, np.uint8)
    if packed.shape[-1] != row_bytes(k):
        raise ValueError(f"packed rows have {packed.shape[-1]} bytes, expected {row_bytes(k)} for K={k}")
    bits = np.unpackbits(packed, axis=-1, count=k, bitorder="little")
    return (1.0 - 2.0 * bits).astype(np.float32)
