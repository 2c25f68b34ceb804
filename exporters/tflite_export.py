"""TFLite lowering of a BEBERT checkpoint: the graph of exporters/graph.py (the same as the ONNX exporter's) on
TFLite ops, written by exporters/tflite_writer.py with the schema bindings that ai-edge-litert ships, so the
exporter needs neither TensorFlow nor a converter: every tensor, quantization parameter and op is ours to choose.

Lowerings (``ops``) of the binary layers:
- 'custom' (default): each binary linear layer is a CUSTOM op ``BebertBinaryFC`` over the packed-bit weight
  (runtime/LAYOUT.md), the binary word embedding a CUSTOM ``BebertBinaryEmbedding``. Their kernels are ours
  (runtime/kernels/litert), run by LiteRT's compiled-model C API (runtime/litert_session.py). The linear op's
  scalar arguments (K, activation mode, bits, symmetric) are its last input, an int32 constant; no custom
  options are written (the kernels would not read them).
- 'builtin': stock builtins only, for any TFLite interpreter: a binary linear layer becomes one FULLY_CONNECTED
  per TWS part whose weight tensor is INT4 holding exactly +-1 with the per-row scale alpha as its per-channel
  quantization scale (so alpha * sign(w) is exact); the interpreter quantizes the (already 4-bit fake-quantized)
  activations to int8 on the fly (dynamic range), which is the only approximation (for sign activations the file
  asks for symmetric input quantization, exact for +-1 in TFLite's own kernels; XNNPACK, the default delegate,
  quantizes asymmetrically regardless, so W1A1 layers there are approximate too). The binary word embedding
  stays 1 bit per weight: the gathered rows are unpacked in the graph (FLOOR_DIV / FLOOR_MOD on int32).
Baselines: precision 'fp32' (float FULLY_CONNECTED) and 'int8' (per-channel symmetric int8 FC weights, float
activations quantized on the fly: what TFLite's dynamic-range quantization produces for FC layers; the word
embedding as int8 rows with a float scale per row, gathered as int8 and widened after the GATHER).

Sequence length: by default the inputs are [1, L] with L resizable (shape_signature [1, -1]) up to the checkpoint's
max_len, so a sentence runs at its own token count, as in ONNX files (LiteRT resizes the inputs; every op's output
shape follows its inputs). The graph is lowered at two lengths and the dimensions and shape constants that differ
are the sequence's (``_generalize_length``); the position rows come from a GATHER at CUMSUM positions, or the
custom embedding op reads the first L rows of the whole table. ``seq_len`` instead writes a fixed [1, seq_len]
file (the runtime pads to it). Signature ``serving_default``: inputs input_ids, attention_mask, token_type_ids
(int64 [1, L]); outputs probs [1, K] and logits_<i> [1, K]; ensembles also carry signatures ``member_<i>`` and
``vote`` over the same operators (``member_signatures``: members side by side on their own threads). Metadata ``bebert`` (JSON: labels, max_len, task,
precision, ops, seq_len, dynamic_length, bebert.json provenance) is embedded in the flatbuffer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import graph
from .graph import Primitives, attention_steps, fake_quant, fake_quant_parts
from .lowering import INPUT_NAMES, EmbeddingSpec, EnsembleSpec
from .tflite_quant import binary_int4_weight, int8_rows, int8_weight
from .tflite_writer import TfliteGraph

CUSTOM_LINEAR = "BebertBinaryFC"
CUSTOM_EMBEDDING = "BebertBinaryEmbedding"
CUSTOM_ATTENTION = "BebertQuantAttention"
CUSTOM_LAYER_NORM = "BebertAddLayerNorm"


class TfliteLowering(Primitives):
    """The graph primitives (exporters/graph.py) as TFLite ops in a TfliteGraph (static shapes). ``ops`` =
    'custom' | 'builtin' (binary layers); ``weights`` = 'fp32' | 'int8' (storage of full-precision FC weights)."""

    def __init__(self, g: TfliteGraph, ops: str, weights: str = "fp32", dynamic: bool = False):
        if ops not in ("custom", "builtin"):
            raise ValueError(f"unknown ops lowering {ops!r}; expected 'custom' or 'builtin'")
        self.g, self.ops, self.weights, self.dynamic = g, ops, weights, dynamic
        self.tfl = g.tfl

    # --- elementwise ---------------------------------------------------------------------------------------
    def const(self, value):
        return self.g.const(value)

    def add(self, a, b):
        return self.g.binary("ADD", a, b)

    def sub(self, a, b):
        return self.g.binary("SUB", a, b)

    def mul(self, a, b):
        return self.g.binary("MUL", a, b)

    def div(self, a, b):
        return self.g.binary("DIV", a, b)

    def round(self, x):
        return self.g.unary("ROUND", x)  # half to even, as torch.round

    def clip(self, x, lo, hi):
        g = self.g
        return g.binary("MINIMUM", g.binary("MAXIMUM", x, g.const(float(lo))), g.const(float(hi)))

    def sign(self, x):
        # sign with sign(0) = +1: SIGN gives {-1, 0, 1}; adding 1 - |SIGN(x)| lifts only the zeros.
        g = self.g
        sg = g.unary("SIGN", x)
        return g.binary("ADD", sg, g.binary("SUB", g.const(1.0), g.unary("ABS", sg)))

    def positive(self, x):
        g = self.g
        return g.cast(g.op("GREATER", [x, g.const(0.0)], g.shape(x), np.bool_), np.float32)

    def to_float(self, x):
        return self.g.cast(x, np.float32)

    def min_per_example(self, x):
        return self.g.reduce("REDUCE_MIN", x, list(range(1, len(self.g.shape(x)))), keep_dims=True)

    # --- shapes --------------------------------------------------------------------------------------------
    def reshape(self, x, shape):
        src = self.g.shape(x)
        dims = [src[i] if d == 0 else d for i, d in enumerate(shape)]  # ONNX's 0 = copy, resolved statically
        if -1 in dims:
            known = int(np.prod([d for d in dims if d != -1]))
            dims[dims.index(-1)] = int(np.prod(src)) // known
        return self.g.reshape(x, tuple(dims))

    def transpose(self, x, perm):
        return self.g.transpose(x, perm)

    def take(self, x, axis, index):
        g = self.g
        shape = g.shape(x)
        begin = [index if i == axis else 0 for i in range(len(shape))]
        size = [1 if i == axis else s for i, s in enumerate(shape)]
        rows = g.op("SLICE", [x, g.const(begin, np.int32), g.const(size, np.int32)], tuple(size), g.dtype(x),
                    ("SliceOptions", self.tfl.SliceOptionsT()))
        return g.reshape(rows, tuple(s for i, s in enumerate(shape) if i != axis))

    # --- layers --------------------------------------------------------------------------------------------
    def matmul(self, a, b, transpose_b=False):
        g = self.g
        opts = self.tfl.BatchMatMulOptionsT()
        opts.adjY = transpose_b
        sa, sb = g.shape(a), g.shape(b)
        return g.op("BATCH_MATMUL", [a, b], sa[:-1] + (sb[-2] if transpose_b else sb[-1],), np.float32,
                    ("BatchMatMulOptions", opts))

    def softmax(self, x):
        opts = self.tfl.SoftmaxOptionsT()
        opts.beta = 1.0
        return self.g.op("SOFTMAX", [x], self.g.shape(x), np.float32, ("SoftmaxOptions", opts))

    def activation(self, x, kind):
        g = self.g
        if kind in ("relu", "tanh"):
            return g.unary(kind.upper(), x)
        if kind == "gelu":  # exact GELU (erf form), as torch.nn.GELU()
            opts = self.tfl.GeluOptionsT()
            opts.approximate = False
            return g.op("GELU", [x], g.shape(x), np.float32, ("GeluOptions", opts))
        raise ValueError(f"unknown activation {kind!r}")

    def layer_norm(self, x, wb, eps, name):
        g = self.g
        axis = [len(g.shape(x)) - 1]
        d = g.binary("SUB", x, g.reduce("MEAN", x, axis, keep_dims=True))
        var = g.reduce("MEAN", g.binary("MUL", d, d), axis, keep_dims=True)
        y = g.binary("MUL", d, g.unary("RSQRT", g.binary("ADD", var, g.const(eps))))
        return g.binary("ADD", g.binary("MUL", y, g.init(f"{name}.weight", wb[0])), g.init(f"{name}.bias", wb[1]))

    def fully_connected(self, x: int, w: int, bias: int, n: int, hybrid: bool, asymmetric: bool = True) -> int:
        """FULLY_CONNECTED [..., K] -> [..., n]; ``hybrid`` (quantized weights): the interpreter quantizes x to
        int8 per run, asymmetric (min/max) or symmetric (max |x| -> 127, which keeps +-1 sign activations exact)."""
        g = self.g
        opts = self.tfl.FullyConnectedOptionsT()
        opts.keepNumDims = True
        opts.asymmetricQuantizeInputs = hybrid and asymmetric
        return g.op("FULLY_CONNECTED", [x, w, bias], g.shape(x)[:-1] + (n,), np.float32,
                    ("FullyConnectedOptions", opts))

    def binary_linear(self, x, spec, name, relu: bool):
        """One `BebertBinaryFC` custom op over the packed bits (runtime/OPS.md), the ReLU fused when ``relu``; None with
        ``ops='builtin'`` (stock ops only)."""
        if self.ops != "custom":
            return None
        g = self.g
        # the op's scalar arguments travel as one int32 constant input (K, act mode, bits, symmetric, relu)
        params = np.array([spec.k, spec.act.code, spec.act.bits, int(spec.act.symmetric), int(relu)], np.int32)
        ins = [x, g.init(f"{name}.packed", spec.packed), g.init(f"{name}.alpha", spec.alpha),
               g.init(f"{name}.bias", spec.bias), g.init(f"{name}.steps", spec.act.steps), g.const(params, np.int32)]
        return g.op(CUSTOM_LINEAR, ins, g.shape(x)[:-1] + (spec.n,), custom=CUSTOM_LINEAR)

    def linear(self, x, spec, name):
        g = self.g
        if not spec.binary:
            x = fake_quant(self, x, spec.act)
            b = g.init(f"{name}.bias", spec.bias)
            if self.weights == "int8":
                return self.fully_connected(x, int8_weight(g, f"{name}.weight", spec.weight), b, spec.n, True)
            return self.fully_connected(x, g.init(f"{name}.weight", spec.weight), b, spec.n, False)
        if self.ops == "custom":
            return self.binary_linear(x, spec, name, relu=False)
        if spec.tied:  # one stock INT4 FULLY_CONNECTED of values {-2, 0, 2} (exact), not one per half
            w = binary_int4_weight(g, f"{name}.tied", spec.packed, spec.alpha[0], spec.k)
            return self.fully_connected(fake_quant(self, x, spec.act), w, g.init(f"{name}.bias", spec.bias), spec.n,
                                        True, spec.act.mode != "sign")
        out = None
        for s, xq in enumerate(fake_quant_parts(self, x, spec.act, spec.packed.shape[0])):
            w = binary_int4_weight(g, f"{name}.part{s}", spec.packed[s], spec.alpha[s], spec.k)
            bias = g.init(f"{name}.bias", spec.bias) if s == spec.packed.shape[0] - 1 else -1
            y = self.fully_connected(xq, w, bias, spec.n, True, spec.act.mode != "sign")
            out = y if out is None else g.binary("ADD", out, y)
        return out

    def add_layer_norm(self, x, residual, wb, eps, name):
        if self.ops != "custom":
            return super().add_layer_norm(x, residual, wb, eps, name)
        g = self.g
        ins = [x, residual, g.init(f"{name}.weight", wb[0]), g.init(f"{name}.bias", wb[1]), g.const([eps])]
        return g.op(CUSTOM_LAYER_NORM, ins, g.shape(x), custom=CUSTOM_LAYER_NORM)

    def quant_attention(self, q, k, v, mask_add, layer, num_heads, name):
        if self.ops != "custom":
            return None
        g = self.g
        params, shape = [num_heads, layer.probs_act.bits], g.shape(q)
        if k is None:  # q is [B, L, 3H]: the op reads Q, K, V from its thirds; params' third entry says so
            k, v, params, shape = q, q, params + [1], shape[:-1] + (shape[-1] // 3,)
        ins = [q, k, v, mask_add, g.init(f"{name}.steps", attention_steps(layer)), g.const(params, np.int32)]
        return g.op(CUSTOM_ATTENTION, ins, shape, custom=CUSTOM_ATTENTION)

    @property
    def packs_qkv(self):
        return self.ops == "custom"

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

    def embedding(self, ids, word, position, name, position_name):
        g = self.g
        if word.table is None and self.ops == "custom":
            # The op adds the first L rows of the position table itself: its output shape then follows from its
            # inputs' shapes, which is all LiteRT tells a custom op when it asks for output layouts.
            pos = g.init(position_name, position if self.dynamic else position[:g.shape(ids)[1]])
            ins = [ids, g.init(f"{name}.packed", word.packed), g.init(f"{name}.scales", word.scales), pos]
            return g.op(CUSTOM_EMBEDDING, ins, g.shape(ids) + (word.dim,), custom=CUSTOM_EMBEDDING)
        if self.dynamic:  # rows 0..L-1 at run time: GATHER at the exclusive running count of ones
            ones = g.binary("ADD", g.binary("MUL", ids, g.const(0, np.int64), np.int64), g.const(1, np.int64), np.int64)
            opts = self.tfl.CumsumOptionsT()
            opts.exclusive = True
            at = g.op("CUMSUM", [ones, g.const(1, np.int32)], g.shape(ids), np.int64, ("CumsumOptions", opts))
            pos = g.gather(g.init(position_name, position), at)
        else:
            pos = g.init(position_name, position[:g.shape(ids)[1]])  # static shape: the first L rows only
        return g.binary("ADD", self.word_embedding(ids, word, name), pos)

    def word_embedding(self, ids: int, spec: EmbeddingSpec, name: str) -> int:
        """ids int64 [B, L] -> float32 [B, L, D]: a float GATHER (int8 rows and their scales for the int8
        baseline), or the 1-bit rows gathered and unpacked in-graph."""
        g = self.g
        if spec.table is not None and self.weights == "int8":
            # The word table is half of a small BERT's weights: the int8 baseline stores it as int8 rows with one
            # float scale per row (``int8_rows``), as TF's dynamic-range converter quantizes GATHER tables. Only
            # the gathered [L, D] rows are widened (GATHER on int8, CAST, MUL by their scales), never the table:
            # a DEQUANTIZE of the whole table would hold a float copy of it in memory at run time.
            q, scale = int8_rows(spec.table)
            rows = g.gather(g.init(f"{name}.table_int8", q), ids, np.int8)                 # [B, L, D] int8
            sc = g.gather(g.init(f"{name}.row_scale", scale), ids)                          # [B, L]
            return g.binary("MUL", g.cast(rows, np.float32), g.reshape(sc, g.shape(sc) + (1,)))
        if spec.table is not None:
            return g.gather(g.init(f"{name}.table", spec.table), ids)
        out = None
        for s in range(spec.packed.shape[0]):
            rows = g.gather(g.init(f"{name}.packed{s}", spec.packed[s]), ids, np.uint8)      # [B, L, bytes]
            sc = g.gather(g.init(f"{name}.scales{s}", spec.scales[s]), ids)                 # [B, L]
            e = g.binary("MUL", self.unpack_signs(rows, spec.dim), g.reshape(sc, g.shape(sc) + (1,)))
            out = e if out is None else g.binary("ADD", out, e)
        return out

    def lookup(self, table, ids, name):
        return self.g.gather(self.g.init(name, table), ids)

    def one_hot_argmax(self, x, k):
        g = self.g
        am_opts = self.tfl.ArgMaxOptionsT()
        am_opts.outputType = self.tfl.TensorType.INT32
        am = g.op("ARG_MAX", [x, g.const([1], np.int32)], g.shape(x)[:-1], np.int32, ("ArgMaxOptions", am_opts))
        oh = self.tfl.OneHotOptionsT()
        oh.axis = -1
        return g.op("ONE_HOT", [am, g.const(k, np.int32), g.const(1.0), g.const(0.0)], g.shape(x), np.float32,
                    ("OneHotOptions", oh))


def build_tflite(spec: EnsembleSpec, ops: str = "custom", weights: str = "fp32", seq_len: int | None = None) -> bytes:
    """The TFLite flatbuffer (bytes) of an EnsembleSpec; see the module docstring for lowerings, the resizable
    sequence length (``seq_len`` None) or a fixed one, and the signature."""
    L = int(seq_len or spec.max_len)
    if L > spec.max_len:
        raise ValueError(f"sequence length {L} exceeds the checkpoint's max_len {spec.max_len}")
    dynamic = seq_len is None and L >= 2

    def lower(n: int):
        g = TfliteGraph()
        inputs = {name: g.tensor(name, (1, n), g.tfl.TensorType.INT64) for name in INPUT_NAMES}
        outputs = graph.ensemble(TfliteLowering(g, ops, weights, dynamic), spec, *inputs.values())
        return g, inputs, outputs

    g, inputs, outputs = lower(L)
    if dynamic:
        _generalize_length(g, lower(L - 1)[0])
    for name, t in outputs.items():
        g.tensors[t].name = name
    meta = dict(spec.metadata) | {"ops": ops if spec.metadata.get("precision") == "binary" else "builtin",
                                  "weights": weights, "seq_len": str(L), "dynamic_length": str(int(dynamic)),
                                  "format": "bebert-tflite-1"}
    return g.serialize(inputs, outputs, meta, member_signatures(outputs, inputs))


def member_signatures(outputs: dict[str, int], inputs: dict[str, int]) -> dict:
    """For an ensemble of several members, signatures ``member_<i>`` (the file's inputs -> ``logits_<i>``) and
    ``vote`` (every ``logits_<i>`` -> ``probs``) over the same operators and constants as ``serving_default``: a
    runtime with a thread per member runs the members side by side and then the file's own vote. {} for one
    member."""
    logits = {k: t for k, t in outputs.items() if k.startswith("logits_")}
    if len(logits) < 2:
        return {}
    parts = {f"member_{k.removeprefix('logits_')}": (inputs, {k: t}) for k, t in logits.items()}
    parts["vote"] = (logits, {"probs": outputs["probs"]})
    return parts


def _generalize_length(g: TfliteGraph, other: TfliteGraph) -> None:
    """Make ``g`` (lowered at length L) resizable along the sequence, given the same graph lowered at another length:
    every tensor dimension that differs is marked dynamic (-1 in its shape_signature, inputs included), and a shape
    constant that differs (a RESHAPE's target, a SLICE's size) gets -1 where it differs (RESHAPE infers that dim,
    SLICE takes the rest of the axis). Any other constant that depends on the length is an error: the file could
    not be resized."""
    tfl = g.tfl
    same_ops = len(g.operators) == len(other.operators) and all(
        (o.opcodeIndex, list(o.inputs), list(o.outputs)) == (p.opcodeIndex, list(p.inputs), list(p.outputs))
        for o, p in zip(g.operators, other.operators))
    if len(g.tensors) != len(other.tensors) or not same_ops:
        raise ValueError("cannot make the TFLite graph resizable: its structure depends on the sequence length")
    shape_args: dict[int, list] = {}  # tensor index -> [(op, builtin code)] of the ops reading it as a shape
    for o in g.operators:
        code = g.codes[o.opcodeIndex].builtinCode
        if code in (tfl.BuiltinOperator.RESHAPE, tfl.BuiltinOperator.SLICE):
            arg = o.inputs[1 if code == tfl.BuiltinOperator.RESHAPE else 2]
            shape_args.setdefault(arg, []).append((o, code))
    for i, (t, u) in enumerate(zip(g.tensors, other.tensors)):
        a, b = g.shapes[i], other.shapes[i]
        if len(a) != len(b):
            raise ValueError(f"cannot make the TFLite graph resizable: the rank of '{t.name}' depends on the length")
        axes = [k for k in range(len(a)) if a[k] != b[k]]
        if axes:
            g.mark_dynamic(i, axes)
        if not t.buffer:
            continue
        x, y = g.buffers[t.buffer].data, other.buffers[u.buffer].data
        if np.array_equal(x, y):
            continue
        if i not in shape_args:
            raise ValueError(f"cannot make the TFLite graph resizable: constant '{t.name}' depends on the sequence length")
        xs, ys = np.frombuffer(x.tobytes(), np.int32), np.frombuffer(y.tobytes(), np.int32)
        new = np.where(xs != ys, -1, xs).astype(np.int32)
        g.buffers[t.buffer].data = np.frombuffer(new.tobytes(), np.uint8)
        for op, code in shape_args[i]:
            if code == tfl.BuiltinOperator.RESHAPE:
                if int((xs != ys).sum()) != 1:
                    raise ValueError(f"cannot make the TFLite graph resizable: reshape '{t.name}' has several length dims")
                op.builtinOptions.newShape = new.tolist()


def save_tflite(data: bytes, out: str | Path) -> Path:
    """Write atomically (temporary file, then rename)."""
    from bebert_deploy.io import atomic_path

    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(data)
    return Path(out)
