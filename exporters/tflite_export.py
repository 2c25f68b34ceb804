"""TFLite lowering of a BEBERT checkpoint: the same EnsembleSpec as the ONNX exporter, written as a TFLite
flatbuffer with the schema bindings that ai-edge-litert ships (``ai_edge_litert.schema_py_generated``), so the
exporter needs neither TensorFlow nor a converter: every tensor, quantization parameter and op is ours to choose.

Lowerings (``ops``) of the binary layers:
- 'custom' (default): each binary linear layer is a CUSTOM op ``BebertBinaryFC`` over the packed-bit weight
  (runtime/LAYOUT.md), the binary word embedding a CUSTOM ``BebertBinaryEmbedding``. Their kernels are ours
  (runtime/kernels/litert), run by LiteRT's compiled-model C API (runtime/litert_session.py).
- 'builtin': stock builtins only, for any TFLite interpreter: a binary linear layer becomes one FULLY_CONNECTED
  per TWS part whose weight tensor is INT4 holding exactly +-1 with the per-row scale alpha as its per-channel
  quantization scale (so alpha * sign(w) is exact); the interpreter quantizes the (already 4-bit fake-quantized)
  activations to int8 on the fly (dynamic range), which is the only approximation (for sign activations the file
  asks for symmetric input quantization, exact for +-1 in TFLite's own kernels; XNNPACK, the default delegate,
  quantizes asymmetrically regardless, so W1A1 layers there are approximate too). The binary word embedding
  stays 1 bit per weight: the gathered rows are unpacked in the graph (FLOOR_DIV / FLOOR_MOD on int32).
Baselines: precision 'fp32' (float FULLY_CONNECTED) and 'int8' (per-channel symmetric int8 FC weights, float
activations quantized on the fly: what TFLite's dynamic-range quantization produces for FC layers).

Shapes are static, [1, L] with L = the checkpoint's max_len (TFLite models are usually fixed-shape; the
runtime pads and runs a batch row by row). Signature ``serving_default``: inputs input_ids, attention_mask,
token_type_ids (int64 [1, L]); outputs probs [1, K] and logits_<i> [1, K]. Metadata ``bebert`` (JSON: labels,
max_len, task, precision, ops, bebert.json provenance) is embedded in the flatbuffer.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers

from bebert_deploy.runtime.tflite_file import METADATA_NAME

from .lowering import ActSpec, EmbeddingSpec, EnsembleSpec, LinearSpec, MemberSpec

CUSTOM_LINEAR = "BebertBinaryFC"
CUSTOM_EMBEDDING = "BebertBinaryEmbedding"
_ALIGN = 64  # LiteRT wraps constant data as host tensor buffers, which must be 64-byte aligned


def _schema():
    from ai_edge_litert import schema_py_generated as tfl

    return tfl


def _tensor_type(dtype) -> int:
    from bebert_deploy.runtime.tflite_file import numpy_dtypes

    return {v: k for k, v in numpy_dtypes().items()}[np.dtype(dtype)]


def pack_int4(q: np.ndarray) -> np.ndarray:
    """int values in [-8, 7] (any shape, row-major) -> TFLite's packed INT4 bytes: two per byte, the first
    element in the low nibble. uint8 [ceil(size / 2)]."""
    flat = (np.asarray(q, np.int8).reshape(-1) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


class TfliteGraph:
    """Collects tensors, constant buffers and operators of one subgraph; ``op`` returns its output tensor index."""

    def __init__(self):
        tfl = _schema()
        self.tfl = tfl
        self.tensors: list = []
        self.shapes: list[tuple[int, ...]] = []
        self.buffers: list = [tfl.BufferT()]  # buffer 0 is the empty sentinel
        self.operators: list = []
        self.codes: list = []
        self._code_index: dict = {}
        self._consts: dict = {}

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

    def init(self, name: str, arr: np.ndarray) -> int:
        arr = np.ascontiguousarray(arr)
        return self.tensor(name, arr.shape, _tensor_type(arr.dtype), arr.tobytes())

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

    def op(self, name: str, inputs: list[int], shape, dtype=np.float32, options=None, custom: str | None = None,
           custom_options: bytes | None = None) -> int:
        """Append builtin op ``name`` (BuiltinOperator member, e.g. 'ADD') or a CUSTOM op; -1 in ``inputs``
        marks an omitted optional input. ``options`` = (BuiltinOptions member name, options object)."""
        tfl = self.tfl
        code = tfl.BuiltinOperator.CUSTOM if custom else getattr(tfl.BuiltinOperator, name)
        out = self.tensor(f"{name.lower()}_{len(self.tensors)}", shape, _tensor_type(dtype))
        o = tfl.OperatorT()
        o.opcodeIndex = self._opcode(code, custom)
        o.inputs, o.outputs = list(inputs), [out]
        if options is not None:
            kind, obj = options
            o.builtinOptionsType, o.builtinOptions = getattr(tfl.BuiltinOptions, kind), obj
        if custom_options is not None:
            o.customOptions = np.frombuffer(custom_options, np.uint8)
            o.customOptionsFormat = tfl.CustomOptionsFormat.FLEXBUFFERS
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
        return self.op("RESHAPE", [x, self.const(shape, np.int32)], shape, self._dtype(x), ("ReshapeOptions", opts))

    def transpose(self, x: int, perm) -> int:
        shape = [self.shape(x)[p] for p in perm]
        return self.op("TRANSPOSE", [x, self.const(perm, np.int32)], shape, self._dtype(x),
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

    def _dtype(self, t: int):
        from bebert_deploy.runtime.tflite_file import numpy_dtypes

        return numpy_dtypes()[self.tensors[t].type]

    def serialize(self, inputs: dict[str, int], outputs: dict[str, int], metadata: dict) -> bytes:
        """The finished model as flatbuffer bytes (file identifier TFL3, schema version 3)."""
        tfl = self.tfl
        sg = tfl.SubGraphT()
        sg.tensors, sg.operators, sg.name = self.tensors, self.operators, "main"
        sg.inputs, sg.outputs = list(inputs.values()), list(outputs.values())
        sig = tfl.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex = "serving_default", 0

        def tmap(items):
            out = []
            for n, i in items.items():
                m = tfl.TensorMapT()
                m.name, m.tensorIndex = n, i
                out.append(m)
            return out

        sig.inputs, sig.outputs = tmap(inputs), tmap(outputs)
        meta_buf = tfl.BufferT()
        meta_buf.data = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
        self.buffers.append(meta_buf)
        md = tfl.MetadataT()
        md.name, md.buffer = METADATA_NAME, len(self.buffers) - 1
        model = tfl.ModelT()
        model.version, model.description = 3, "bebert-deploy"
        model.operatorCodes, model.subgraphs, model.buffers = self.codes, [sg], self.buffers
        model.metadata, model.signatureDefs = [md], [sig]
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
    tfl = _schema()
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


class TfliteLowering:
    """Emits one member into a TfliteGraph. ``ops`` = 'custom' | 'builtin' (binary layers);
    ``weights`` = 'fp32' | 'int8' (storage of full-precision FC weights)."""

    def __init__(self, g: TfliteGraph, ops: str, weights: str = "fp32"):
        if ops not in ("custom", "builtin"):
            raise ValueError(f"unknown ops lowering {ops!r}; expected 'custom' or 'builtin'")
        self.g, self.ops, self.weights = g, ops, weights
        self.tfl = g.tfl

    # --- activations -----------------------------------------------------------------------------------
    def fake_quant(self, x: int, act: ActSpec, part: int = 0) -> int:
        """The LSQ quantizer with the same float operations as PyTorch (x / step, round half to even, clamp)."""
        g = self.g
        if act.mode == "float":
            return x
        if act.mode == "sign":
            # sign with sign(0) = +1: SIGN gives {-1, 0, 1}; adding 1 - |SIGN(x)| lifts only the zeros.
            sg = g.unary("SIGN", x)
            return g.binary("ADD", sg, g.binary("SUB", g.const(1.0), g.unary("ABS", sg)))
        step = g.const(act.steps[part])
        qn, qp = (-(2 ** (act.bits - 1)), 2 ** (act.bits - 1) - 1) if act.symmetric else (0, 2**act.bits - 1)

        def clip_round(t):
            r = g.unary("ROUND", g.binary("DIV", t, step))
            return g.binary("MINIMUM", g.binary("MAXIMUM", r, g.const(float(qn))), g.const(float(qp)))

        if act.symmetric:
            return g.binary("MUL", clip_round(x), step)
        mn = g.reduce("REDUCE_MIN", x, list(range(1, len(g.shape(x)))), keep_dims=True)  # per example
        return g.binary("ADD", g.binary("MUL", clip_round(g.binary("SUB", x, mn)), step), mn)

    # --- layers ------------------------------------------------------------------------------------------
    def fully_connected(self, x: int, w: int, bias: int, n: int, hybrid: bool, asymmetric: bool = True) -> int:
        """FULLY_CONNECTED; ``hybrid`` (quantized weights): the interpreter quantizes x to int8 per run,
        asymmetric (min/max) or symmetric (max |x| -> 127, which keeps +-1 sign activations exact)."""
        g = self.g
        opts = self.tfl.FullyConnectedOptionsT()
        opts.keepNumDims = True
        opts.asymmetricQuantizeInputs = hybrid and asymmetric
        return g.op("FULLY_CONNECTED", [x, w, bias], g.shape(x)[:-1] + (n,), np.float32,
                    ("FullyConnectedOptions", opts))

    def _quantized_weight(self, name: str, q: np.ndarray, scale: np.ndarray, int4: bool) -> int:
        """A per-channel (axis 0) symmetric weight tensor: int8 [N, K] or packed INT4."""
        tfl = self.tfl
        qp = tfl.QuantizationParametersT()
        qp.scale = [float(s) for s in scale]
        qp.zeroPoint = [0] * len(scale)
        qp.quantizedDimension = 0
        data = pack_int4(q).tobytes() if int4 else np.ascontiguousarray(q, np.int8).tobytes()
        return self.g.tensor(name, q.shape, tfl.TensorType.INT4 if int4 else tfl.TensorType.INT8, data, qp)

    def linear(self, x: int, spec: LinearSpec, name: str) -> int:
        g = self.g
        if not spec.binary:
            x = self.fake_quant(x, spec.act)
            b = g.init(f"{name}.bias", spec.bias)
            if self.weights == "int8":
                scale = np.abs(spec.weight).max(axis=1) / 127.0
                scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
                q = np.clip(np.round(spec.weight / scale[:, None]), -127, 127).astype(np.int8)
                return self.fully_connected(x, self._quantized_weight(f"{name}.weight", q, scale, False), b, spec.n, True)
            return self.fully_connected(x, g.init(f"{name}.weight", spec.weight), b, spec.n, False)
        if self.ops == "custom":
            params = np.array([spec.k, spec.act.code, spec.act.bits, int(spec.act.symmetric)], np.int32)
            opts = flexbuffers.Dumps({"K": spec.k, "N": spec.n, "S": int(spec.packed.shape[0]), "act_mode": spec.act.code,
                                      "act_bits": spec.act.bits, "act_symmetric": int(spec.act.symmetric),
                                      "act_steps": [float(s) for s in spec.act.steps]})
            ins = [x, g.init(f"{name}.packed", spec.packed), g.init(f"{name}.alpha", spec.alpha),
                   g.init(f"{name}.bias", spec.bias), g.init(f"{name}.steps", spec.act.steps), g.const(params, np.int32)]
            return g.op(CUSTOM_LINEAR, ins, g.shape(x)[:-1] + (spec.n,), custom=CUSTOM_LINEAR, custom_options=opts)
        from bebert_deploy.runtime.bitpack import unpack_bits

        out = None
        for s in range(spec.packed.shape[0]):
            signs = unpack_bits(spec.packed[s], spec.k).astype(np.int8)  # [N, K] of +-1
            alpha = spec.alpha[s]
            # A zero-scale row (all weights binarized to 0) is stored as zeros with scale 1: TFLite rejects scale 0.
            signs[alpha == 0] = 0
            w = self._quantized_weight(f"{name}.part{s}", signs, np.where(alpha == 0, 1.0, alpha), True)
            bias = g.init(f"{name}.bias", spec.bias) if s == spec.packed.shape[0] - 1 else -1
            y = self.fully_connected(self.fake_quant(x, spec.act, s), w, bias, spec.n, True, spec.act.mode != "sign")
            out = y if out is None else g.binary("ADD", out, y)
        return out

    def unpack_signs(self, rows: int, dim: int) -> int:
        """uint8 [..., row_bytes] packed rows -> float +-1 [..., dim] (runtime/LAYOUT.md: bit 1 <=> -1, LSB first)."""
        g = self.g
        lead, rb = g.shape(rows)[:-1], g.shape(rows)[-1]
        v = g.reshape(g.cast(rows, np.int32), lead + (rb, 1))
        bits = g.binary("FLOOR_MOD", g.binary("FLOOR_DIV", v, g.const(1 << np.arange(8), np.int32), np.int32),
                        g.const(2, np.int32), np.int32)
        flat = g.reshape(g.cast(bits, np.float32), lead + (rb * 8,))
        if rb * 8 != dim:
            flat = g.op("SLICE", [flat, g.const([0] * (len(lead) + 1), np.int32), g.const(list(lead) + [dim], np.int32)],
                        lead + (dim,), np.float32, ("SliceOptions", self.tfl.SliceOptionsT()))
        return g.binary("SUB", g.const(1.0), g.binary("MUL", flat, g.const(2.0)))

    def embedding(self, ids: int, spec: EmbeddingSpec, name: str, position: int) -> int:
        """Word embedding of ``ids`` plus the position embeddings ``position`` [L, D]."""
        g = self.g
        if spec.table is not None:
            return g.binary("ADD", g.gather(g.init(f"{name}.table", spec.table), ids), position)
        if self.ops == "custom":
            # The op adds the position rows itself: its output shape then follows from its inputs' shapes,
            # which is all LiteRT tells a custom op when it asks for output layouts.
            ins = [ids, g.init(f"{name}.packed", spec.packed), g.init(f"{name}.scales", spec.scales), position]
            return g.op(CUSTOM_EMBEDDING, ins, g.shape(ids) + (spec.dim,), custom=CUSTOM_EMBEDDING,
                        custom_options=flexbuffers.Dumps({"dim": spec.dim, "S": int(spec.packed.shape[0])}))
        out = None
        for s in range(spec.packed.shape[0]):
            rows = g.gather(g.init(f"{name}.packed{s}", spec.packed[s]), ids, np.uint8)      # [B, L, bytes]
            sc = g.gather(g.init(f"{name}.scales{s}", spec.scales[s]), ids)                 # [B, L]
            e = g.binary("MUL", self.unpack_signs(rows, spec.dim), g.reshape(sc, g.shape(sc) + (1,)))
            out = e if out is None else g.binary("ADD", out, e)
        return g.binary("ADD", out, position)

    def layer_norm(self, x: int, wb, eps: float, name: str) -> int:
        g = self.g
        axis = [len(g.shape(x)) - 1]
        d = g.binary("SUB", x, g.reduce("MEAN", x, axis, keep_dims=True))
        var = g.reduce("MEAN", g.binary("MUL", d, d), axis, keep_dims=True)
        y = g.binary("MUL", d, g.unary("RSQRT", g.binary("ADD", var, g.const(eps))))
        return g.binary("ADD", g.binary("MUL", y, g.init(f"{name}.weight", wb[0])), g.init(f"{name}.bias", wb[1]))

    def softmax(self, x: int) -> int:
        opts = self.tfl.SoftmaxOptionsT()
        opts.beta = 1.0
        return self.g.op("SOFTMAX", [x], self.g.shape(x), np.float32, ("SoftmaxOptions", opts))

    def matmul(self, a: int, b: int, adj_y: bool) -> int:
        g = self.g
        opts = self.tfl.BatchMatMulOptionsT()
        opts.adjY = adj_y
        sa, sb = g.shape(a), g.shape(b)
        return g.op("BATCH_MATMUL", [a, b], sa[:-1] + (sb[-2] if adj_y else sb[-1],), np.float32,
                    ("BatchMatMulOptions", opts))

    def member(self, m: MemberSpec, ids: int, mask: int, types: int, p: str) -> int:
        """Emit one member; returns its logits tensor [1, K]."""
        g = self.g
        B, L = g.shape(ids)
        e = g.binary("ADD", self.embedding(ids, m.word, f"{p}word", g.init(f"{p}position", m.position[:L])),
                     g.gather(g.init(f"{p}token_type", m.token_type), types))
        h = self.layer_norm(e, m.ln_emb, m.eps, f"{p}ln_emb")
        mask_add = g.binary("MUL", g.binary("SUB", g.const(1.0), g.cast(mask, np.float32)), g.const(m.mask_value))
        mask_add = g.reshape(mask_add, (B, 1, 1, L))
        nh, hd = m.num_heads, m.head_dim
        for i, Ly in enumerate(m.layers):
            q_ = f"{p}l{i}."

            def heads(t):
                return g.transpose(g.reshape(t, (B, L, nh, hd)), [0, 2, 1, 3])

            q = heads(self.fake_quant(self.linear(h, Ly.query, q_ + "query"), Ly.q_act))
            k = heads(self.fake_quant(self.linear(h, Ly.key, q_ + "key"), Ly.k_act))
            v = heads(self.fake_quant(self.linear(h, Ly.value, q_ + "value"), Ly.v_act))
            scores = g.binary("ADD", g.binary("DIV", self.matmul(q, k, True), g.const(math.sqrt(hd))), mask_add)
            if Ly.attention == "bool":  # Bi-Attention: probs = 1[scores > 0]
                probs = g.cast(g.op("GREATER", [scores, g.const(0.0)], g.shape(scores), np.bool_), np.float32)
            else:
                probs = self.fake_quant(self.softmax(scores), Ly.probs_act)
            ctx = g.reshape(g.transpose(self.matmul(probs, v, False), [0, 2, 1, 3]), (B, L, nh * hd))
            h = self.layer_norm(g.binary("ADD", h, self.linear(ctx, Ly.attn_out, q_ + "attn_out")), Ly.ln_attn, m.eps,
                                q_ + "ln_attn")
            inner = self.linear(h, Ly.ffn_in, q_ + "ffn_in")
            if m.hidden_act == "relu":
                inner = g.unary("RELU", inner)
            else:  # exact GELU (erf form), as torch.nn.GELU()
                opts = self.tfl.GeluOptionsT()
                opts.approximate = False
                inner = g.op("GELU", [inner], g.shape(inner), np.float32, ("GeluOptions", opts))
            h = self.layer_norm(g.binary("ADD", h, self.linear(inner, Ly.ffn_out, q_ + "ffn_out")), Ly.ln_ffn, m.eps,
                                q_ + "ln_ffn")
        H = g.shape(h)[-1]
        cls = g.op("SLICE", [h, g.const([0, 0, 0], np.int32), g.const([B, 1, H], np.int32)], (B, 1, H), np.float32,
                   ("SliceOptions", self.tfl.SliceOptionsT()))
        pooled = g.unary("TANH", self.linear(g.reshape(cls, (B, H)), m.pooler, f"{p}pooler"))
        return self.linear(pooled, m.classifier, f"{p}classifier")


def build_tflite(spec: EnsembleSpec, ops: str = "custom", weights: str = "fp32", seq_len: int | None = None) -> bytes:
    """The TFLite flatbuffer (bytes) of an EnsembleSpec; see the module docstring for lowerings and signature."""
    L = int(seq_len or spec.max_len)
    if L > spec.max_len:
        raise ValueError(f"sequence length {L} exceeds the checkpoint's max_len {spec.max_len}")
    g = TfliteGraph()
    low = TfliteLowering(g, ops, weights)
    inputs = {n: g.tensor(n, (1, L), g.tfl.TensorType.INT64) for n in ("input_ids", "attention_mask", "token_type_ids")}
    k = spec.members[0].classifier.n
    logits = [low.member(m, inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"], f"m{i}.")
              for i, m in enumerate(spec.members)]
    total = None
    for i, lg in enumerate(logits):
        if k == 1:
            p = lg
        elif spec.vote == "hard":
            am = g.op("ARG_MAX", [lg, g.const([1], np.int32)], (1,), np.int32,
                      ("ArgMaxOptions", _argmax_options(g)))
            oh = g.tfl.OneHotOptionsT()
            oh.axis = -1
            p = g.op("ONE_HOT", [am, g.const(k, np.int32), g.const(1.0), g.const(0.0)], (1, k), np.float32,
                     ("OneHotOptions", oh))
        else:
            p = low.softmax(lg)
        p = g.binary("MUL", p, g.const(spec.weights[i]))
        total = p if total is None else g.binary("ADD", total, p)
    outputs = {"probs": total} | {f"logits_{i}": lg for i, lg in enumerate(logits)}
    for name, t in outputs.items():
        g.tensors[t].name = name
    meta = dict(spec.metadata) | {"ops": ops if spec.metadata.get("precision") == "binary" else "builtin",
                                  "weights": weights, "seq_len": str(L), "format": "bebert-tflite-1"}
    return g.serialize(inputs, outputs, meta)


def _argmax_options(g: TfliteGraph):
    o = g.tfl.ArgMaxOptionsT()
    o.outputType = g.tfl.TensorType.INT32
    return o


def save_tflite(data: bytes, out: str | Path) -> Path:
    """Write atomically (temporary file, then rename)."""
    from bebert_deploy.io import atomic_path

    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(data)
    return Path(out)
