"""ONNX lowering of a BEBERT checkpoint: one graph holding every ensemble member and their weighted vote. The
graph itself is written once in exporters/graph.py; this module maps its primitives to ONNX nodes.

Lowerings (``ops``):
- 'custom' (default): every binary linear layer is a `bebert.BinaryLinear` node over the packed-bit weight
  (runtime/LAYOUT.md), the binary word embedding a `bebert.BinaryEmbedding`; they run in our native op
  library (runtime/kernels/ort/ort_ops.cc).
- 'builtin': stock ONNX ops only. The packed bits are unpacked in the graph (BitShift / BitwiseAnd / Cast)
  from the same uint8 initializers, so the file stays 1 bit per weight; ONNX Runtime constant-folds the
  unpacking at session start, so the layers then run as float MatMul on exactly +-1 weights (exact, fp32 speed).
Activation fake-quantizers (LSQ) are lowered with Div / Round / Clip / Mul (ReduceMin for asymmetric ones),
the same float operations as PyTorch's, in both lowerings.

Graph inputs: input_ids, attention_mask, token_type_ids (int64 [batch, seq]); outputs: probs [batch, K]
(sum_i w_i softmax(logits_i), w = alpha / sum(alpha); a weighted one-hot vote for 'hard' checkpoints) and
logits_<i> [batch, K] per member.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import graph
from .graph import Primitives, fake_quant, fake_quant_parts
from .dedupe import SharedConstants
from .lowering import INPUT_NAMES, EmbeddingSpec, EnsembleSpec

OPSET = 18            # BitwiseAnd needs 18; LayerNormalization 17
CUSTOM_DOMAIN = "bebert"
CUSTOM_DOMAIN_VERSION = 1


class GraphBuilder:
    """Collects nodes and initializers; ``op`` returns the name of the node's (first) output."""

    def __init__(self):
        self.nodes: list = []
        self.inits: list = []
        self._n = 0
        self._consts: dict = {}
        self._shared = SharedConstants()

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        arr = np.array(arr, order="C")  # keeps 0-d scalars 0-d

        def add():  # e.g. members that share one word table: stored once, read by both
            self.inits.append(numpy_helper.from_array(arr, name))
            return name

        return self._shared.intern(arr, add)

    def const(self, value, dtype=np.float32) -> str:
        arr = np.asarray(value, dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(self.fresh("c"), arr)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], name: str | None = None, domain: str = "", n_out: int = 1, **attrs):
        outs = [self.fresh(name or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh("n_" + op_type), domain=domain or None, **attrs))
        return outs[0] if n_out == 1 else outs


class OnnxLowering(Primitives):
    """The graph primitives (exporters/graph.py) as ONNX nodes in a GraphBuilder; ``ops`` = 'custom' | 'builtin'
    picks how binary layers are lowered. Dynamic shapes: [batch, seq]."""

    def __init__(self, g: GraphBuilder, ops: str):
        if ops not in ("custom", "builtin"):
            raise ValueError(f"unknown ops lowering {ops!r}; expected 'custom' or 'builtin'")
        self.g, self.ops = g, ops

    # --- elementwise ---------------------------------------------------------------------------------------
    def const(self, value):
        return self.g.const(value)

    def add(self, a, b):
        return self.g.op("Add", [a, b])

    def sub(self, a, b):
        return self.g.op("Sub", [a, b])

    def mul(self, a, b):
        return self.g.op("Mul", [a, b])

    def div(self, a, b):
        return self.g.op("Div", [a, b])

    def round(self, x):
        return self.g.op("Round", [x])  # half to even, as torch.round

    def clip(self, x, lo, hi):
        return self.g.op("Clip", [x, self.g.const(lo), self.g.const(hi)])

    def sign(self, x):
        g = self.g
        return g.op("Where", [g.op("Less", [x, g.const(0.0)]), g.const(-1.0), g.const(1.0)])

    def positive(self, x):
        return self.g.op("Cast", [self.g.op("Greater", [x, self.g.const(0.0)])], to=TensorProto.FLOAT)

    def to_float(self, x):
        return self.g.op("Cast", [x], to=TensorProto.FLOAT)

    def min_per_example(self, x):
        # the minimum over all axes but the batch axis, reshaped to [B, 1, ..., 1] whatever x's rank
        g = self.g
        mn = g.op("ReduceMin", [g.op("Flatten", [x], axis=1), g.const([1], np.int64)], keepdims=1)  # [B, 1]
        shape = g.op("Shape", [x])
        ones = g.op("Add", [g.op("Mul", [shape, g.const(0, np.int64)]), g.const(1, np.int64)])
        target = g.op("Concat", [g.op("Slice", [shape, g.const([0], np.int64), g.const([1], np.int64)]),
                                 g.op("Slice", [ones, g.const([1], np.int64), g.const([2**62], np.int64)])], axis=0)
        return g.op("Reshape", [mn, target])

    # --- shapes --------------------------------------------------------------------------------------------
    def reshape(self, x, shape):
        return self.g.op("Reshape", [x, self.g.const(shape, np.int64)])

    def transpose(self, x, perm):
        return self.g.op("Transpose", [x], perm=list(perm))

    def take(self, x, axis, index):
        return self.g.op("Gather", [x, self.g.const(index, np.int64)], axis=axis)

    # --- layers --------------------------------------------------------------------------------------------
    def matmul(self, a, b, transpose_b=False):
        if transpose_b:  # ONNX Runtime folds this into the producer's Transpose
            b = self.g.op("Transpose", [b], perm=[0, 1, 3, 2])
        return self.g.op("MatMul", [a, b])

    def softmax(self, x):
        return self.g.op("Softmax", [x], axis=-1)

    def activation(self, x, kind):
        g = self.g
        if kind == "relu":
            return g.op("Relu", [x])
        if kind == "tanh":
            return g.op("Tanh", [x])
        if kind == "gelu":  # exact GELU, as torch.nn.GELU(): 0.5 x (1 + erf(x / sqrt(2)))
            erf = g.op("Erf", [g.op("Div", [x, g.const(math.sqrt(2.0))])])
            return g.op("Mul", [g.op("Mul", [x, g.const(0.5)]), g.op("Add", [erf, g.const(1.0)])])
        raise ValueError(f"unknown activation {kind!r}")

    def layer_norm(self, x, wb, eps, name):
        g = self.g
        return g.op("LayerNormalization", [x, g.init(f"{name}.weight", wb[0]), g.init(f"{name}.bias", wb[1])],
                    axis=-1, epsilon=eps)

    def unpack_signs(self, packed: str, k: int) -> str:
        """uint8 [..., rows, row_bytes(k)] -> float +-1 [..., rows, k] (runtime/LAYOUT.md: bit 1 <=> -1, LSB first)."""
        g = self.g
        shifts = g.const(np.arange(8, dtype=np.uint8), np.uint8)
        bits = g.op("BitwiseAnd", [g.op("BitShift", [g.op("Unsqueeze", [packed, g.const([-1], np.int64)]), shifts],
                                        direction="RIGHT"), g.const(1, np.uint8)])
        shape = g.op("Shape", [packed])
        lead = g.op("Slice", [shape, g.const([0], np.int64), g.const([-1], np.int64)])
        merged = g.op("Reshape", [bits, g.op("Concat", [lead, g.const([-1], np.int64)], axis=0)])
        cut = g.op("Slice", [merged, g.const([0], np.int64), g.const([k], np.int64), g.const([-1], np.int64)])
        return g.op("Sub", [g.const(1.0), g.op("Mul", [g.op("Cast", [cut], to=TensorProto.FLOAT), g.const(2.0)])])

    def binary_linear(self, x, spec, name, relu: bool):
        """One `bebert.BinaryLinear` node over the packed bits (runtime/OPS.md), the ReLU fused when ``relu``; None with
        ``ops='builtin'`` (stock ops only)."""
        if self.ops != "custom":
            return None
        g = self.g
        extra = {"relu": 1} if relu else {}  # absent = 0, so files without a fused ReLU read as before
        return g.op("BinaryLinear", [x, g.init(f"{name}.packed", spec.packed), g.init(f"{name}.alpha", spec.alpha),
                                     g.init(f"{name}.bias", spec.bias), g.init(f"{name}.steps", spec.act.steps)],
                    name=name, domain=CUSTOM_DOMAIN, act_mode=spec.act.code, act_bits=spec.act.bits,
                    act_symmetric=int(spec.act.symmetric), **extra)

    def linear(self, x, spec, name):
        g = self.g
        if not spec.binary:
            w = g.init(f"{name}.weight_t", spec.weight.T.copy())
            return g.op("Add", [g.op("MatMul", [fake_quant(self, x, spec.act), w]), g.init(f"{name}.bias", spec.bias)])
        if self.ops == "custom":
            return self.binary_linear(x, spec, name, relu=False)
        packed = g.init(f"{name}.packed", spec.packed)
        out = None
        signs_t = g.op("Transpose", [self.unpack_signs(packed, spec.k)], perm=[0, 2, 1])  # [S, K, N]
        for s, xq in enumerate(fake_quant_parts(self, x, spec.act, spec.packed.shape[0])):
            ws = g.op("Gather", [signs_t, g.const(s, np.int64)], axis=0)
            y = g.op("Mul", [g.op("MatMul", [xq, ws]), g.const(spec.alpha[s])])
            out = y if out is None else g.op("Add", [out, y])
        return g.op("Add", [out, g.init(f"{name}.bias", spec.bias)])

    def add_layer_norm(self, x, residual, wb, eps, name):
        if self.ops != "custom":
            return super().add_layer_norm(x, residual, wb, eps, name)
        g = self.g
        ins = [x, residual, g.init(f"{name}.weight", wb[0]), g.init(f"{name}.bias", wb[1]), g.const([eps])]
        return g.op("AddLayerNorm", ins, name=name, domain=CUSTOM_DOMAIN)

    def quant_attention(self, q, k, v, mask_add, layer, num_heads, name):
        if self.ops != "custom":
            return None
        steps = self.g.init(f"{name}.steps", graph.attention_steps(layer))
        packed = {"packed_qkv": 1} if k is None else {}  # q is [B, L, 3H]: the op reads Q, K, V from its thirds
        k, v = (q, q) if k is None else (k, v)
        return self.g.op("QuantAttention", [q, k, v, mask_add, steps], name=name,
                         domain=CUSTOM_DOMAIN, num_heads=num_heads, act_bits=layer.probs_act.bits, **packed)

    @property
    def packs_qkv(self):
        return self.ops == "custom"

    def embedding(self, ids, word, position, name, position_name):
        g = self.g
        # the first seq rows of the position table (seq = the input's dynamic length)
        seq = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [ids]), g.const(1, np.int64)], axis=0), g.const([0], np.int64)])
        pos = g.op("Slice", [g.init(position_name, position), g.const([0], np.int64), seq])
        return g.op("Add", [self.word_embedding(ids, word, name), pos])

    def word_embedding(self, ids: str, spec: EmbeddingSpec, name: str) -> str:
        """ids int64 [B, L] -> float32 [B, L, D]: a float Gather, our BinaryEmbedding op, or in-graph unpacking."""
        g = self.g
        if spec.table is not None:
            return g.op("Gather", [g.init(f"{name}.table", spec.table), ids], axis=0)
        packed, scales = g.init(f"{name}.packed", spec.packed), g.init(f"{name}.scales", spec.scales)
        if self.ops == "custom":
            return g.op("BinaryEmbedding", [ids, packed, scales], name=name, domain=CUSTOM_DOMAIN, dim=spec.dim)
        out = None
        for s in range(spec.packed.shape[0]):
            rows = g.op("Gather", [g.op("Gather", [packed, g.const(s, np.int64)], axis=0), ids], axis=0)  # [B, L, bytes]
            sc = g.op("Unsqueeze", [g.op("Gather", [g.op("Gather", [scales, g.const(s, np.int64)], axis=0), ids], axis=0),
                                    g.const([-1], np.int64)])
            e = g.op("Mul", [self.unpack_signs(rows, spec.dim), sc])
            out = e if out is None else g.op("Add", [out, e])
        return out

    def lookup(self, table, ids, name):
        return self.g.op("Gather", [self.g.init(name, table), ids], axis=0)

    def one_hot_argmax(self, x, k):
        g = self.g
        return g.op("OneHot", [g.op("ArgMax", [x], axis=-1, keepdims=0), g.const(k, np.int64), g.const([0.0, 1.0])], axis=-1)


def build_onnx(spec: EnsembleSpec, ops: str = "custom") -> onnx.ModelProto:
    """The ONNX model of an EnsembleSpec (see module docstring for inputs/outputs)."""
    g = GraphBuilder()
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in INPUT_NAMES]
    results = graph.ensemble(OnnxLowering(g, ops), spec, *INPUT_NAMES)
    outputs = []
    for name, value in results.items():
        g.nodes.append(helper.make_node("Identity", [value], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", spec.num_labels]))
    graph_proto = helper.make_graph(g.nodes, "bebert", inputs, outputs, g.inits)
    opsets = [helper.make_opsetid("", OPSET)]
    if ops == "custom":
        opsets.append(helper.make_opsetid(CUSTOM_DOMAIN, CUSTOM_DOMAIN_VERSION))
    model = helper.make_model(graph_proto, opset_imports=opsets, producer_name="bebert-deploy")
    model.ir_version = 10
    for key, val in spec.metadata.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(val)))
    model.metadata_props.append(onnx.StringStringEntryProto(key="ops", value=ops))
    return model


def check_model(model: onnx.ModelProto, custom: bool) -> None:
    """onnx.checker (full check) and shape inference must pass; custom-domain nodes are skipped by both."""
    onnx.checker.check_model(model, full_check=not custom)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=not custom)


def save_onnx(model: onnx.ModelProto, out: str | Path) -> Path:
    """Write atomically (temporary file, then rename)."""
    from bebert_deploy.io import atomic_path

    with atomic_path(out) as tmp:
        onnx.save_model(model, str(tmp))
    return Path(out)


def quantize_int8(fp32_path: str | Path, out: str | Path) -> Path:
    """Dynamic-range int8 baseline (onnxruntime.quantization.quantize_dynamic of the fp32 export): MatMul weights
    int8 (MatMulInteger on uint8 activations quantized per run), and the word / token-type tables too: Gather is
    in quantize_dynamic's default op set (GatherQuant), which stores a Gather's initializer table as uint8 with one
    scale and zero point and widens only the gathered rows (DequantizeLinear), ~4x smaller than the float table.
    The position table stays float (it is read through Slice, not Gather; max_len rows only)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bebert_deploy.io import atomic_path

    with atomic_path(out) as tmp:
        quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8)
    return Path(out)
