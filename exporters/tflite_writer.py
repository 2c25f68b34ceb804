"""A generic TFLite flatbuffer writer: one graph of tensors, constant buffers and operators (plus signatures over
parts of it, e.g. one per ensemble member, that share its constants), serialized with
the schema bindings that ai-edge-litert ships (``ai_edge_litert.schema_py_generated``), so no TensorFlow and no
converter are needed. Knows nothing about BERT (exporters/tflite_export.py lowers the graph onto it).

Shapes are tracked here (``shape``), because TFLite files carry every tensor's shape; a dimension that may change
at run time is marked with ``mark_dynamic`` (the tensor's shape_signature then holds -1 there).
"""
from __future__ import annotations

import json

import flatbuffers
import numpy as np

from bebert_deploy.runtime.tflite_file import METADATA_NAME, numpy_dtypes

from .dedupe import SharedConstants

_ALIGN = 64  # LiteRT wraps constant data as host tensor buffers, which must be 64-byte aligned


def schema():
    """The flatbuffer schema module (object API classes ModelT, TensorT, ... and enums)."""
    from ai_edge_litert import schema_py_generated as tfl

    return tfl


def tensor_type(dtype) -> int:
    """TensorType enum value of a numpy dtype."""
    return {v: k for k, v in numpy_dtypes().items()}[np.dtype(dtype)]


class TfliteGraph:
    """Collects tensors, constant buffers and operators of one subgraph; ``op`` returns its output tensor index."""

    def __init__(self):
        tfl = schema()
        self.tfl = tfl
        self.tensors: list = []
        self.shapes: list[tuple[int, ...]] = []
        self.buffers: list = [tfl.BufferT()]  # buffer 0 is the empty sentinel
        self.operators: list = []
        self.codes: list = []
        self._code_index: dict = {}
        self._consts: dict = {}
        self._shared = SharedConstants()

    def tensor(self, name: str, shape, tensor_type: int, data: bytes | None = None, quant=None) -> int:
        t = self.tfl.TensorT()
        t.name, t.shape, t.type, t.quantization = name, list(shape), tensor_type, quant
        t.buffer = 0
        if data is not None:
            b = self.tfl.BufferT()
            b.data = np.frombuffer(data, np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        self.shapes.append(tuple(int(s) for s in shape))
        return len(self.tensors) - 1

    def mark_dynamic(self, t: int, axes) -> None:
        """Declare ``axes`` of tensor ``t`` resizable: its shape_signature holds -1 there (the shape keeps the
        length the file was written at). LiteRT resizes only inputs whose signature says so."""
        sig = list(self.tensors[t].shape)
        for a in axes:
            sig[a] = -1
        self.tensors[t].shapeSignature = sig

    def init(self, name: str, arr: np.ndarray) -> int:
        arr = np.ascontiguousarray(arr)
        # e.g. members that share one word table: one tensor, one buffer
        return self._shared.intern(arr, lambda: self.tensor(name, arr.shape, tensor_type(arr.dtype), arr.tobytes()))

    def const(self, value, dtype=np.float32) -> int:
        arr = np.asarray(value, dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(f"c{len(self.tensors)}", arr)
        return self._consts[key]

    def _opcode(self, builtin: int, custom: str | None) -> int:
        key = (builtin, custom)
        if key not in self._code_index:
            c = self.tfl.OperatorCodeT()
            c.builtinCode = builtin
            # Codes above 127 live in builtin_code; the deprecated int8 field holds the placeholder 127.
            c.deprecatedBuiltinCode = min(builtin, 127)
            c.version = 1
            if custom is not None:
                c.customCode = custom
            self.codes.append(c)
            self._code_index[key] = len(self.codes) - 1
        return self._code_index[key]

    def op(self, name: str, inputs: list[int], shape, dtype=np.float32, options=None, custom: str | None = None) -> int:
        """Append builtin op ``name`` (BuiltinOperator member, e.g. 'ADD') or a CUSTOM op; -1 in ``inputs``
        marks an omitted optional input. ``options`` = (BuiltinOptions member name, options object)."""
        tfl = self.tfl
        code = tfl.BuiltinOperator.CUSTOM if custom else getattr(tfl.BuiltinOperator, name)
        out = self.tensor(f"{name.lower()}_{len(self.tensors)}", shape, tensor_type(dtype))
        o = tfl.OperatorT()
        o.opcodeIndex = self._opcode(code, custom)
        o.inputs, o.outputs = list(inputs), [out]
        if options is not None:
            kind, obj = options
            o.builtinOptionsType, o.builtinOptions = getattr(tfl.BuiltinOptions, kind), obj
        self.operators.append(o)
        return out

    # ---- shape-aware helpers ------------------------------------------------------------------------------
    def shape(self, t: int) -> tuple[int, ...]:
        return self.shapes[t]

    def binary(self, name: str, a: int, b: int, dtype=np.float32) -> int:
        """Broadcasting elementwise op (ADD, SUB, MUL, DIV, MINIMUM, MAXIMUM, FLOOR_DIV, FLOOR_MOD)."""
        shape = np.broadcast_shapes(self.shape(a), self.shape(b))
        opts = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions"}.get(name)
        obj = getattr(self.tfl, f"{opts}T")() if opts else None
        return self.op(name, [a, b], shape, dtype, (opts, obj) if opts else None)

    def unary(self, name: str, x: int, dtype=np.float32) -> int:
        return self.op(name, [x], self.shape(x), dtype)

    def reshape(self, x: int, shape) -> int:
        opts = self.tfl.ReshapeOptionsT()
        opts.newShape = list(shape)
        return self.op("RESHAPE", [x, self.const(shape, np.int32)], shape, self.dtype(x), ("ReshapeOptions", opts))

    def transpose(self, x: int, perm) -> int:
        shape = [self.shape(x)[p] for p in perm]
        return self.op("TRANSPOSE", [x, self.const(perm, np.int32)], shape, self.dtype(x),
                       ("TransposeOptions", self.tfl.TransposeOptionsT()))

    def cast(self, x: int, dtype) -> int:
        return self.op("CAST", [x], self.shape(x), dtype)

    def gather(self, table: int, ids: int, dtype=np.float32) -> int:
        opts = self.tfl.GatherOptionsT()
        opts.axis = 0
        shape = self.shape(ids) + self.shape(table)[1:]
        return self.op("GATHER", [table, ids], shape, dtype, ("GatherOptions", opts))

    def reduce(self, name: str, x: int, axes, keep_dims: bool) -> int:
        opts = self.tfl.ReducerOptionsT()
        opts.keepDims = keep_dims
        shape = [1 if i in axes else s for i, s in enumerate(self.shape(x))] if keep_dims else \
            [s for i, s in enumerate(self.shape(x)) if i not in axes]
        return self.op(name, [x, self.const(list(axes), np.int32)], shape, np.float32, ("ReducerOptions", opts))

    def dtype(self, t: int):
        """numpy dtype of tensor ``t``."""
        return numpy_dtypes()[self.tensors[t].type]

    def _subgraph(self, name: str, inputs: dict[str, int], outputs: dict[str, int], whole: bool):
        """(SubGraphT, SignatureDefT) of signature ``name``: the whole graph, or (``whole`` False) only the operators
        that ``outputs`` need when ``inputs`` are given, with their tensors renumbered. Tensors and constant buffers
        are shared with the whole graph (a buffer is referenced, never copied), so such a signature adds operator
        and tensor tables only."""
        import copy

        tfl = self.tfl
        if whole:
            tensors, operators, index = self.tensors, self.operators, {i: i for i in range(len(self.tensors))}
        else:
            producer = {o.outputs[0]: o for o in self.operators}
            stop, needed, stack, seen = set(inputs.values()), set(), list(outputs.values()), set()
            while stack:
                t = stack.pop()
                if t in seen or t in stop:
                    continue
                seen.add(t)
                op = producer.get(t)
                if op is None:
                    if not self.tensors[t].buffer:
                        raise ValueError(f"signature {name}: tensor '{self.tensors[t].name}' is not computed from its inputs")
                    continue
                needed.add(id(op))
                stack.extend(i for i in op.inputs if i >= 0)
            kept = [o for o in self.operators if id(o) in needed]  # the whole graph's order is topological
            used = sorted(set(inputs.values()) | set(outputs.values())
                          | {i for o in kept for i in [*o.inputs, *o.outputs] if i >= 0})
            index = {t: k for k, t in enumerate(used)}
            tensors = [self.tensors[t] for t in used]
            operators = []
            for o in kept:
                c = copy.copy(o)
                c.inputs = [index[i] if i >= 0 else -1 for i in o.inputs]
                c.outputs = [index[i] for i in o.outputs]
                operators.append(c)
        sg = tfl.SubGraphT()
        sg.tensors, sg.operators, sg.name = tensors, operators, name
        sg.inputs, sg.outputs = [index[i] for i in inputs.values()], [index[i] for i in outputs.values()]

        def tmap(items):
            out = []
            for n, i in items.items():
                m = tfl.TensorMapT()
                m.name, m.tensorIndex = n, index[i]
                out.append(m)
            return out

        sig = tfl.SignatureDefT()
        sig.signatureKey = name
        sig.inputs, sig.outputs = tmap(inputs), tmap(outputs)
        return sg, sig

    def serialize(self, inputs: dict[str, int], outputs: dict[str, int], metadata: dict,
                  parts: dict[str, tuple[dict[str, int], dict[str, int]]] | None = None) -> bytes:
        """The finished model as flatbuffer bytes (file identifier TFL3, schema version 3). Signature
        ``serving_default`` (subgraph 0) maps ``inputs`` to ``outputs``; each entry of ``parts`` adds a signature of
        that name computing its outputs (tensors of this graph) from its inputs with the operators between them,
        sharing every constant with subgraph 0."""
        tfl = self.tfl
        subgraphs, sigs = [], []
        for k, (name, (ins, outs)) in enumerate({"serving_default": (inputs, outputs), **(parts or {})}.items()):
            sg, sig = self._subgraph("main" if k == 0 else name, ins, outs, whole=k == 0)
            sig.signatureKey, sig.subgraphIndex = name, k
            subgraphs.append(sg)
            sigs.append(sig)
        meta_buf = tfl.BufferT()
        meta_buf.data = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
        self.buffers.append(meta_buf)
        md = tfl.MetadataT()
        md.name, md.buffer = METADATA_NAME, len(self.buffers) - 1
        model = tfl.ModelT()
        model.version, model.description = 3, "bebert-deploy"
        model.operatorCodes, model.subgraphs, model.buffers = self.codes, subgraphs, self.buffers
        model.metadata, model.signatureDefs = [md], sigs
        # Constant data are written first, each vector aligned to _ALIGN bytes, and handed to the object API as
        # offsets: the generated Pack would align them to 1 byte only.
        builder = flatbuffers.Builder(1024 + sum(len(b.data) + _ALIGN for b in self.buffers if b.data is not None))
        packed = []
        for b in self.buffers:
            if b.data is None or len(b.data) == 0:
                packed.append(None)
                continue
            data = np.ascontiguousarray(b.data, np.uint8)
            builder.StartVector(1, data.size, _ALIGN)
            builder.head -= data.size
            builder.Bytes[builder.head:builder.head + data.size] = data.tobytes()
            packed.append(builder.EndVector())
        buf_offsets = []
        for off in packed:
            tfl.BufferStart(builder)
            if off is not None:
                tfl.BufferAddData(builder, off)
            buf_offsets.append(tfl.BufferEnd(builder))
        return _finish_model(builder, model, buf_offsets)


def _finish_model(builder, model, buf_offsets) -> bytes:
    """Assemble the Model table around our pre-built, aligned Buffer tables; the children (operator codes,
    subgraphs, metadata, signatures) are packed by the object API."""
    tfl = schema()
    codes = [c.Pack(builder) for c in model.operatorCodes]
    subgraphs = [s.Pack(builder) for s in model.subgraphs]
    metadata = [m.Pack(builder) for m in model.metadata]
    sigs = [s.Pack(builder) for s in model.signatureDefs]
    desc = builder.CreateString(model.description)

    def vec(start, items):
        start(builder, len(items))
        for it in reversed(items):
            builder.PrependUOffsetTRelative(it)
        return builder.EndVector()

    codes_v = vec(tfl.ModelStartOperatorCodesVector, codes)
    sub_v = vec(tfl.ModelStartSubgraphsVector, subgraphs)
    buf_v = vec(tfl.ModelStartBuffersVector, buf_offsets)
    md_v = vec(tfl.ModelStartMetadataVector, metadata)
    sig_v = vec(tfl.ModelStartSignatureDefsVector, sigs)
    tfl.ModelStart(builder)
    tfl.ModelAddVersion(builder, model.version)
    tfl.ModelAddOperatorCodes(builder, codes_v)
    tfl.ModelAddSubgraphs(builder, sub_v)
    tfl.ModelAddDescription(builder, desc)
    tfl.ModelAddBuffers(builder, buf_v)
    tfl.ModelAddMetadata(builder, md_v)
    tfl.ModelAddSignatureDefs(builder, sig_v)
    builder.Finish(tfl.ModelEnd(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
