"""Reading what the runtime needs from a .tflite flatbuffer (metadata, signature tensors) with the schema
bindings of ai-edge-litert; no TensorFlow, no interpreter. Written files come from exporters/tflite_export.py."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError

METADATA_NAME = "bebert"  # name of the metadata entry holding our JSON


@dataclass
class TensorInfo:
    """A signature input/output: name, shape, numpy dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class TfliteInfo:
    """``inputs`` / ``outputs``: signature ``serving_default`` (the first); ``signatures``: every signature key, in
    file order (LiteRT's signature index), with its inputs and outputs."""

    metadata: dict
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    custom_ops: list[str]
    signatures: dict[str, tuple[list[TensorInfo], list[TensorInfo]]]


def numpy_dtypes() -> dict[int, np.dtype]:
    """TFLite TensorType -> numpy dtype for the tensor types bebert files use (the exporter uses its inverse)."""
    from ai_edge_litert import schema_py_generated as tfl

    t = tfl.TensorType
    return {t.FLOAT32: np.dtype(np.float32), t.INT32: np.dtype(np.int32), t.INT64: np.dtype(np.int64),
            t.UINT8: np.dtype(np.uint8), t.INT8: np.dtype(np.int8), t.BOOL: np.dtype(np.bool_)}


def _np_dtype(tensor_type: int, path: Path) -> np.dtype:
    table = numpy_dtypes()
    if tensor_type not in table:
        raise ModelError(f"{path}: unsupported signature tensor type {tensor_type}")
    return table[tensor_type]


def _check_float_constants(model, path: Path) -> None:
    """Refuses a float32 constant holding NaN or inf. Stock kernels turn such values into plausible finite outputs
    (int8 / int4 activation quantization clamps NaN), so a corrupt constant must be caught before any run."""
    from ai_edge_litert import schema_py_generated as tfl

    checked = set()  # signatures over parts of the graph share its buffers: each is read once
    for g in range(model.SubgraphsLength()):
        sg = model.Subgraphs(g)
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            if t.Type() != tfl.TensorType.FLOAT32 or t.Buffer() <= 0 or t.Buffer() >= model.BuffersLength() \
                    or t.Buffer() in checked:
                continue
            checked.add(t.Buffer())
            raw = model.Buffers(t.Buffer()).DataAsNumpy()
            if isinstance(raw, int) or raw.size == 0:  # no data: not a constant
                continue
            if raw.size % 4:
                raise ModelError(f"{path}: constant tensor '{t.Name().decode(errors='replace')}' has {raw.size} bytes, "
                                 "not a whole number of float32 values")
            if not np.isfinite(raw.view(np.float32)).all():
                raise ModelError(f"{path}: constant tensor '{t.Name().decode(errors='replace')}' holds NaN or inf")


def read_tflite(path: str | Path) -> TfliteInfo:
    """Metadata (the ``bebert`` JSON, {} if absent), signature tensors and custom op names.
    Raises ModelError for a file that is not a readable TFLite flatbuffer or has a NaN / inf float32 constant."""
    from ai_edge_litert import schema_py_generated as tfl

    path = Path(path)
    # Read into memory rather than mmap: numpy views of the buffers (and the frames of an exception raised while
    # they exist) would keep an mmap from closing. The copy is freed before the runtime loads the file itself.
    buf = path.read_bytes()
    if not buf:
        raise ModelError(f"{path}: empty file, not a TFLite model")
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = tfl.Model.GetRootAs(buf, 0)
        meta = {}
        for i in range(model.MetadataLength()):
            md = model.Metadata(i)
            if md.Name() and md.Name().decode() == METADATA_NAME:
                meta = json.loads(model.Buffers(md.Buffer()).DataAsNumpy().tobytes().decode())
        if not isinstance(meta, dict):
            raise ModelError(f"{path}: the '{METADATA_NAME}' metadata is not a JSON object")
        if model.SignatureDefsLength() == 0:
            raise ModelError(f"{path}: the model has no signature (export it with bebert-deploy)")
        def info(sg, tmap):
            t = sg.Tensors(tmap.TensorIndex())
            return TensorInfo(tmap.Name().decode(), tuple(int(d) for d in t.ShapeAsNumpy()), _np_dtype(t.Type(), path))

        signatures = {}
        for k in range(model.SignatureDefsLength()):
            sig = model.SignatureDefs(k)
            sg = model.Subgraphs(sig.SubgraphIndex())
            signatures[sig.SignatureKey().decode()] = ([info(sg, sig.Inputs(i)) for i in range(sig.InputsLength())],
                                                       [info(sg, sig.Outputs(i)) for i in range(sig.OutputsLength())])
        ins, outs = next(iter(signatures.values()))
        customs = sorted({model.OperatorCodes(i).CustomCode().decode() for i in range(model.OperatorCodesLength())
                          if model.OperatorCodes(i).CustomCode()})
        _check_float_constants(model, path)
    except ModelError:
        raise
    except Exception as e:  # a truncated or corrupt flatbuffer raises struct/index/unicode/json errors
        raise ModelError(f"{path}: corrupt TFLite flatbuffer ({type(e).__name__})") from None
    return TfliteInfo(meta, ins, outs, customs, signatures)
