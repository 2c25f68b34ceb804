"""ONNX lowering of a BEBERT checkpoint: one graph holding every ensemble member and their weighted vote.

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

from .lowering import ActSpec, EmbeddingSpec, EnsembleSpec, LinearSpec, MemberSpec

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

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.array(arr, order="C"), name))  # keeps 0-d scalars 0-d
        return name

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


class OnnxLowering:
    """Emits one member's subgraph into a GraphBuilder; ``ops`` = 'custom' | 'builtin'."""

    def __init__(self, g: GraphBuilder, ops: str):
        if ops not in ("custom", "builtin"):
            raise ValueError(f"unknown ops lowering {ops!r}; expected 'custom' or 'builtin'")
        self.g, self.ops = g, ops

    # --- activations -----------------------------------------------------------------------------------
    def fake_quant(self, x: str, act: ActSpec, part: int = 0) -> str:
        g = self.g
        if act.mode == "float":
            return x
        if act.mode == "sign":
            neg = g.op("Less", [x, g.const(0.0)])
            return g.op("Where", [neg, g.const(-1.0), g.const(1.0)])
        step = g.const(act.steps[part])
        qn, qp = (-(2 ** (act.bits - 1)), 2 ** (act.bits - 1) - 1) if act.symmetric else (0, 2**act.bits - 1)
        if act.symmetric:
            q = g.op("Clip", [g.op("Round", [g.op("Div", [x, step])]), g.const(qn), g.const(qp)])
            return g.op("Mul", [q, step])
        # per-example minimum (over all axes but the batch axis), reshaped to [B, 1, ..., 1] whatever x's rank
        mn = g.op("ReduceMin", [g.op("Flatten", [x], axis=1), g.const([1], np.int64)], keepdims=1)  # [B, 1]
        shape = g.op("Shape", [x])
        ones = g.op("Add", [g.op("Mul", [shape, g.const(0, np.int64)]), g.const(1, np.int64)])
        target = g.op("Concat", [g.op("Slice", [shape, g.const([0], np.int64), g.const([1], np.int64)]),
                                 g.op("Slice", [ones, g.const([1], np.int64), g.const([2**62], np.int64)])], axis=0)
        mn = g.op("Reshape", [mn, target])
        q = g.op("Clip", [g.op("Round", [g.op("Div", [g.op("Sub", [x, mn]), step])]), g.const(qn), g.const(qp)])
        return g.op("Add", [g.op("Mul", [q, step]), mn])

    # --- packed bits in stock ops ------------------------------------------------------------------------
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

    # --- layers ------------------------------------------------------------------------------------------
    def linear(self, x: str, spec: LinearSpec, name: str) -> str:
        g = self.g
        if not spec.binary:
            x = self.fake_quant(x, spec.act)
            w = g.init(f"{name}.weight_t", spec.weight.T.copy())
            return g.op("Add", [g.op("MatMul", [x, w]), g.init(f"{name}.bias", spec.bias)])
        packed = g.init(f"{name}.packed", spec.packed)
        if self.ops == "custom":
            return g.op("BinaryLinear", [x, packed, g.init(f"{name}.alpha", spec.alpha), g.init(f"{name}.bias", spec.bias),
                                         g.init(f"{name}.steps", spec.act.steps)], name=name, domain=CUSTOM_DOMAIN,
                        act_mode=spec.act.code, act_bits=spec.act.bits, act_symmetric=int(spec.act.symmetric))
        out = None
        signs_t = g.op("Transpose", [self.unpack_signs(packed, spec.k)], perm=[0, 2, 1])  # [S, K, N]
        for s in range(spec.packed.shape[0]):
            ws = g.op("Gather", [signs_t, g.const(s, np.int64)], axis=0)
            y = g.op("Mul", [g.op("MatMul", [self.fake_quant(x, spec.act, s), ws]), g.const(spec.alpha[s])])
            out = y if out is None else g.op("Add", [out, y])
        return g.op("Add", [out, g.init(f"{name}.bias", spec.bias)])

    def embedding(self, ids: str, spec: EmbeddingSpec, name: str) -> str:
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

    def layer_norm(self, x: str, wb, eps: float, name: str) -> str:
        g = self.g
        return g.op("LayerNormalization", [x, g.init(f"{name}.weight", wb[0]), g.init(f"{name}.bias", wb[1])],
                    axis=-1, epsilon=eps)

    def member(self, m: MemberSpec, ids: str, mask: str, types: str, p: str) -> str:
        """Emit one member; returns the name of its logits [batch, K]."""
        g = self.g
        seq = g.op("Gather", [g.op("Shape", [ids]), g.const(1, np.int64)], axis=0)
        pos = g.op("Slice", [g.init(f"{p}position", m.position), g.const([0], np.int64),
                             g.op("Unsqueeze", [seq, g.const([0], np.int64)])])
        e = g.op("Add", [g.op("Add", [self.embedding(ids, m.word, f"{p}word"), pos]),
                         g.op("Gather", [g.init(f"{p}token_type", m.token_type), types], axis=0)])
        h = self.layer_norm(e, m.ln_emb, m.eps, f"{p}ln_emb")
        maskf = g.op("Cast", [mask], to=TensorProto.FLOAT)
        mask_add = g.op("Mul", [g.op("Sub", [g.const(1.0), maskf]), g.const(m.mask_value)])
        mask_add = g.op("Unsqueeze", [mask_add, g.const([1, 2], np.int64)])  # [B, 1, 1, L]
        heads_shape = g.const([0, 0, m.num_heads, m.head_dim], np.int64)
        for i, L in enumerate(m.layers):
            q_ = f"{p}l{i}."

            def heads(t, perm):
                return g.op("Transpose", [g.op("Reshape", [t, heads_shape])], perm=perm)

            q = heads(self.fake_quant(self.linear(h, L.query, q_ + "query"), L.q_act), [0, 2, 1, 3])
            k = heads(self.fake_quant(self.linear(h, L.key, q_ + "key"), L.k_act), [0, 2, 3, 1])
            v = heads(self.fake_quant(self.linear(h, L.value, q_ + "value"), L.v_act), [0, 2, 1, 3])
            scores = g.op("Add", [g.op("Div", [g.op("MatMul", [q, k]), g.const(math.sqrt(m.head_dim))]), mask_add])
            if L.attention == "bool":  # Bi-Attention: exact, the scores of +-1 queries/keys are multiples of 1/sqrt(d)
                probs = g.op("Cast", [g.op("Greater", [scores, g.const(0.0)])], to=TensorProto.FLOAT)
            else:
                probs = self.fake_quant(g.op("Softmax", [scores], axis=-1), L.probs_act)
            ctx = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3]),
                                   g.const([0, 0, -1], np.int64)])
            h = self.layer_norm(g.op("Add", [h, self.linear(ctx, L.attn_out, q_ + "attn_out")]), L.ln_attn, m.eps, q_ + "ln_attn")
            inner = self.linear(h, L.ffn_in, q_ + "ffn_in")
            if m.hidden_act == "relu":
                inner = g.op("Relu", [inner])
            else:  # exact GELU, as torch.nn.GELU(): 0.5 x (1 + erf(x / sqrt(2)))
                erf = g.op("Erf", [g.op("Div", [inner, g.const(math.sqrt(2.0))])])
                inner = g.op("Mul", [g.op("Mul", [inner, g.const(0.5)]), g.op("Add", [erf, g.const(1.0)])])
            h = self.layer_norm(g.op("Add", [h, self.linear(inner, L.ffn_out, q_ + "ffn_out")]), L.ln_ffn, m.eps, q_ + "ln_ffn")
        cls = g.op("Gather", [h, g.const(0, np.int64)], axis=1)
        pooled = g.op("Tanh", [self.linear(cls, m.pooler, f"{p}pooler")])
        return self.linear(pooled, m.classifier, f"{p}classifier")


def build_onnx(spec: EnsembleSpec, ops: str = "custom") -> onnx.ModelProto:
    """The ONNX model of an EnsembleSpec (see module docstring for inputs/outputs)."""
    g = GraphBuilder()
    low = OnnxLowering(g, ops)
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    k = spec.members[0].classifier.n
    outputs, member_logits = [], []
    for i, m in enumerate(spec.members):
        lg = low.member(m, "input_ids", "attention_mask", "token_type_ids", f"m{i}.")
        name = f"logits_{i}"
        g.nodes.append(helper.make_node("Identity", [lg], [name]))
        member_logits.append(name)
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", k]))
    total = None
    for i, lg in enumerate(member_logits):
        if k == 1:
            p = lg
        elif spec.vote == "hard":
            p = g.op("OneHot", [g.op("ArgMax", [lg], axis=-1, keepdims=0), g.const(k, np.int64), g.const([0.0, 1.0])], axis=-1)
        else:
            p = g.op("Softmax", [lg], axis=-1)
        p = g.op("Mul", [p, g.const(spec.weights[i])])
        total = p if total is None else g.op("Add", [total, p])
    g.nodes.append(helper.make_node("Identity", [total], ["probs"]))
    outputs.insert(0, helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", k]))
    graph = helper.make_graph(g.nodes, "bebert", inputs, outputs, g.inits)
    opsets = [helper.make_opsetid("", OPSET)]
    if ops == "custom":
        opsets.append(helper.make_opsetid(CUSTOM_DOMAIN, CUSTOM_DOMAIN_VERSION))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="bebert-deploy")
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
    """Dynamic-range int8 baseline (onnxruntime.quantization.quantize_dynamic of the fp32 export)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bebert_deploy.io import atomic_path

    with atomic_path(out) as tmp:
        quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8)
    return Path(out)
