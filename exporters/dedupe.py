"""Content identity of exported constants, shared by the ONNX and TFLite writers: an array that several members
hold (a shared word table) is stored once and read by every node that uses it."""
from __future__ import annotations

import hashlib

import numpy as np

MIN_BYTES = 256  # smaller constants are not worth a hash


def content_key(arr: np.ndarray) -> tuple | None:
    """(dtype, shape, SHA-256 of the C-order bytes) of ``arr``, or None below MIN_BYTES."""
    if arr.nbytes < MIN_BYTES:
        return None
    return arr.dtype.str, arr.shape, hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


class SharedConstants:
    """The handles (ONNX initializer names, TFLite tensor indices) of the constants a writer has stored, by
    content: ``intern(arr, add)`` returns the handle of an identical earlier array, else stores it with ``add()``."""

    def __init__(self):
        self._seen: dict = {}

    def intern(self, arr: np.ndarray, add):
        key = content_key(arr)
        if key in self._seen:
            return self._seen[key]
        handle = add()
        if key is not None:
            self._seen[key] = handle
        return handle
