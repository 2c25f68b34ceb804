"""Quantized weight tensors of the stock TFLite lowering: TFLite's packed INT4 layout, per-channel int8 weights
(FC weights and the int8 baseline's word-embedding rows), and the INT4 tensors that hold a binary layer's
signs (or a tied TWS slot's sum of two sign planes) exactly, its scale alpha as the per-channel scale."""
from __future__ import annotations

import numpy as np

from bebert_deploy.runtime.bitpack import unpack_bits

from .tflite_writer import TfliteGraph


def pack_int4(q: np.ndarray) -> np.ndarray:
    """int values in [-8, 7] (any shape, row-major) -> TFLite's packed INT4 bytes: two per byte, the first
    element in the low nibble. uint8 [ceil(size / 2)]."""
    flat = (np.asarray(q, np.int8).reshape(-1) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def quantized_weight(g: TfliteGraph, name: str, q: np.ndarray, scale: np.ndarray, int4: bool) -> int:
    """A per-channel (axis 0) symmetric weight tensor of values q int [N, K] with scales float [N]: INT8, or
    packed INT4 (q in [-8, 7]). Returns the tensor index."""
    tfl = g.tfl
    qp = tfl.QuantizationParametersT()
    qp.scale = [float(s) for s in scale]
    qp.zeroPoint = [0] * len(scale)
    qp.quantizedDimension = 0
    data = pack_int4(q).tobytes() if int4 else np.ascontiguousarray(q, np.int8).tobytes()
    return g.tensor(name, q.shape, tfl.TensorType.INT4 if int4 else tfl.TensorType.INT8, data, qp)


def int8_rows(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 [N, K] -> (q int8 [N, K], scale float32 [N]): symmetric per-row quantization, scale max|row| / 127,
    so q * scale[:, None] is within scale / 2 of every weight. An all-zero row gets scale 1 (TFLite rejects 0)."""
    scale = np.abs(weight).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(weight / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def int8_weight(g: TfliteGraph, name: str, weight: np.ndarray) -> int:
    """float32 [N, K] -> per-channel symmetric INT8 tensor (``int8_rows``), what TFLite's dynamic-range
    quantization produces for FC weights."""
    q, scale = int8_rows(weight)
    return quantized_weight(g, name, q, scale, False)


def binary_int4_weight(g: TfliteGraph, name: str, packed: np.ndarray, alpha: np.ndarray, k: int) -> int:
    """Sign planes sharing one scale -> INT4 tensor [N, k] of their sum with per-channel scale alpha, so the
    dequantized weight is exactly alpha * sum_s sign_s(w): packed uint8 [N, row_bytes(k)] (one binary half,
    values +-1) or [2, N, row_bytes(k)] (a tied TWS slot, values -2, 0, 2); alpha float32 [N]."""
    q = unpack_bits(packed, k).astype(np.int8)
    if q.ndim == 3:
        q = q.sum(axis=0, dtype=np.int8)
    # A zero-scale row (all weights binarized to 0) is stored as zeros with scale 1: TFLite rejects scale 0.
    q[alpha == 0] = 0
    return quantized_weight(g, name, q, np.where(alpha == 0, 1.0, alpha), True)
