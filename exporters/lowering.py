"""Back-end-neutral description of a BEBERT checkpoint for the exporters (one description, two back-ends): the
data that exporters/graph.py turns into a graph (what each member holds, the vote rule and weights, the outputs).

Every linear slot becomes a LinearSpec (packed sign bits + per-row scales, or a float weight), the word
embedding an EmbeddingSpec, each activation fake-quantizer an ActSpec, each encoder layer a LayerSpec. Weights are binarized with the
training code's own functions (bebert_deploy.models.quantizers) and packed with runtime.bitpack, so neither
the scale formula nor the bit layout is re-derived here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bebert_deploy.models.bert import MASK_VALUE, BertClassifier
from bebert_deploy.models.layers import QuantEmbedding, QuantLinear, layer_parts
from bebert_deploy.models.quantizers import LsqActQuantizer, SignActQuantizer, ternary_sign_planes, weight_scale
from bebert_deploy.runtime.bitpack import pack_bits


@dataclass
class ActSpec:
    """An activation quantizer: mode 'float' | 'int' (LSQ) | 'sign'; steps [S] (one per TWS part)."""

    mode: str = "float"
    bits: int = 32
    symmetric: bool = True
    steps: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))

    @property
    def code(self) -> int:
        """The kernels' ActMode value (runtime/kernels/bgemm/bgemm.h)."""
        return {"float": 0, "int": 1, "sign": 2}[self.mode]


def act_spec(modules: list[nn.Module]) -> ActSpec:
    """ActSpec of one or more quantizers of the same kind (the TWS parts' input quantizers)."""
    m = modules[0]
    if isinstance(m, LsqActQuantizer):
        if not all(isinstance(x, LsqActQuantizer) and x.bits == m.bits and x.symmetric == m.symmetric for x in modules):
            raise ValueError("the parts of a split layer have different activation quantizers")
        if not all(bool(x.initialized) for x in modules):
            raise ValueError("an LSQ activation step was never initialised (was the model trained?)")
        steps = np.array([float(x.step.detach()) for x in modules], np.float32)
        return ActSpec("int", m.bits, m.symmetric, steps)
    if isinstance(m, SignActQuantizer):
        return ActSpec("sign", 1, True, np.ones(len(modules), np.float32))
    if isinstance(m, nn.Identity):
        return ActSpec("float", 32, True, np.ones(len(modules), np.float32))
    raise ValueError(f"unsupported activation quantizer {type(m).__name__}")


@dataclass
class LinearSpec:
    """y = act(x) W^T + b. Binary: packed uint8 [S, N, row_bytes(K)], alpha float32 [S, N]. Float: weight [N, K]."""

    k: int
    n: int
    bias: np.ndarray
    act: ActSpec
    packed: np.ndarray | None = None
    alpha: np.ndarray | None = None
    weight: np.ndarray | None = None

    @property
    def binary(self) -> bool:
        return self.packed is not None

    @property
    def tied(self) -> bool:
        """Two halves with one input quantizer and one scale: exactly ternary alpha * (s0 + s1) (tied TWS)."""
        return (self.binary and self.packed.shape[0] == 2 and self.act.steps[0] == self.act.steps[1]
                and np.array_equal(self.alpha[0], self.alpha[1]))


def _ternary_parts(w: torch.Tensor, per_row: bool) -> tuple[np.ndarray, np.ndarray]:
    """A ternary weight [N, K] -> (packed uint8 [2, N, row_bytes(K)], scales float32 [2, N]): the two sign planes
    of a tied TWS slot sharing one scale (models.quantizers.ternary_sign_planes)."""
    planes, scale = ternary_sign_planes(w.detach().float(), per_row)
    sc = _np(scale)
    return pack_bits(_np(planes)), np.stack([sc, sc]).astype(np.float32)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def linear_spec(slot: nn.Module) -> LinearSpec:
    """Lower a linear slot (QuantLinear, a SumOfParts of them, or nn.Linear). A ternary QuantLinear (a tied TWS
    member) becomes two binary halves with one scale and one input quantizer, which is exact."""
    parts = layer_parts(slot)
    if isinstance(parts[0], QuantLinear):
        bias = sum(_np(p.bias) for p in parts)
        act = act_spec([p.act_quant for p in parts])
        n, k = parts[0].weight.shape
        if parts[0].weight_mode == "binary":
            packed = np.stack([pack_bits(_np(p.weight)) for p in parts])
            alpha = np.stack([np.broadcast_to(_np(weight_scale(p.weight, p.per_row)).reshape(-1), (n,)) for p in parts])
            return LinearSpec(k, n, bias.astype(np.float32), act, packed=packed, alpha=alpha.astype(np.float32))
        if parts[0].weight_mode == "ternary" and len(parts) == 1:  # a tied TWS member: two planes, one quantizer
            packed, alpha = _ternary_parts(parts[0].weight, parts[0].per_row)
            act = act_spec([parts[0].act_quant] * 2)
            return LinearSpec(k, n, bias.astype(np.float32), act, packed=packed, alpha=alpha)
        if parts[0].weight_mode == "fp" and len(parts) == 1:
            return LinearSpec(k, n, bias.astype(np.float32), act, weight=_np(parts[0].weight))
        raise ValueError(f"cannot export {parts[0].weight_mode} weights: export binary, ternary (tied TWS) or "
                         "full-precision models")
    if isinstance(slot, nn.Linear):
        return LinearSpec(slot.in_features, slot.out_features, _np(slot.bias), ActSpec(), weight=_np(slot.weight))
    raise ValueError(f"unsupported layer {type(slot).__name__}")


@dataclass
class EmbeddingSpec:
    """Word embedding: binary (packed uint8 [S, V, row_bytes(D)], scales float32 [S, V]) or float table [V, D]."""

    dim: int
    packed: np.ndarray | None = None
    scales: np.ndarray | None = None
    table: np.ndarray | None = None


def embedding_spec(slot: nn.Module) -> EmbeddingSpec:
    parts = layer_parts(slot)
    if not isinstance(parts[0], QuantEmbedding):
        raise ValueError(f"unsupported embedding {type(parts[0]).__name__}")
    dim = parts[0].weight.shape[1]
    if parts[0].weight_mode == "binary":
        packed = np.stack([pack_bits(_np(p.weight)) for p in parts])
        scales = np.stack([_np(weight_scale(p.weight, True)).reshape(-1) for p in parts]).astype(np.float32)
        return EmbeddingSpec(dim, packed=packed, scales=scales)
    if parts[0].weight_mode == "ternary" and len(parts) == 1:
        packed, scales = _ternary_parts(parts[0].weight, True)
        return EmbeddingSpec(dim, packed=packed, scales=scales)
    if parts[0].weight_mode == "fp" and len(parts) == 1:
        return EmbeddingSpec(dim, table=_np(parts[0].weight))
    raise ValueError(f"cannot export a {parts[0].weight_mode} embedding")


@dataclass
class LayerSpec:
    query: LinearSpec
    key: LinearSpec
    value: LinearSpec
    attn_out: LinearSpec
    ffn_in: LinearSpec
    ffn_out: LinearSpec
    q_act: ActSpec
    k_act: ActSpec
    v_act: ActSpec
    probs_act: ActSpec
    ln_attn: tuple[np.ndarray, np.ndarray]
    ln_ffn: tuple[np.ndarray, np.ndarray]
    attention: str = "softmax"  # or 'bool': BiBERT's Bi-Attention, probs = 1[scores > 0] (probs_act unused)


def packed_qkv_linear(layer: LayerSpec) -> LinearSpec | None:
    """Q, K and V of ``layer`` as one linear [.., K] -> [.., 3 A] (weights, scales and biases concatenated along N,
    in that order) when they can run as one GEMM: binary, one input width, and one input quantizer (equal modes and
    steps, as ``QuantConfig.qkv_shared_act`` trains them). None otherwise."""
    specs = (layer.query, layer.key, layer.value)
    q = layer.query
    if not all(s.binary for s in specs):
        return None
    same = all(s.k == q.k and s.packed.shape[0] == q.packed.shape[0] and s.act.mode == q.act.mode and s.act.bits == q.act.bits
               and s.act.symmetric == q.act.symmetric and np.array_equal(s.act.steps, q.act.steps) for s in specs)
    if not same:
        return None
    return LinearSpec(q.k, sum(s.n for s in specs), np.concatenate([s.bias for s in specs]), q.act,
                      packed=np.concatenate([s.packed for s in specs], axis=1),
                      alpha=np.concatenate([s.alpha for s in specs], axis=1))


@dataclass
class MemberSpec:
    """One BERT classifier, lowered."""

    num_heads: int
    head_dim: int
    hidden_act: str           # 'relu' | 'gelu'
    eps: float
    word: EmbeddingSpec
    position: np.ndarray      # [max_pos, H]
    token_type: np.ndarray    # [types, H]
    ln_emb: tuple[np.ndarray, np.ndarray]
    layers: list[LayerSpec]
    pooler: LinearSpec
    classifier: LinearSpec
    mask_value: float = MASK_VALUE


def member_spec(model: BertClassifier, max_len: int | None = None) -> MemberSpec:
    """Lower a BertClassifier (eval mode is assumed: no dropout in the lowered graph). The position table is cut
    to ``max_len`` rows: inputs never exceed the checkpoint's max_len, so the other rows are dead weight."""
    def ln(m):
        return _np(m.weight), _np(m.bias)

    layers = []
    for L in model.layers:
        bool_attn = L.attention == "bool"
        layers.append(LayerSpec(linear_spec(L.query), linear_spec(L.key), linear_spec(L.value), linear_spec(L.attn_out),
                                linear_spec(L.ffn_in), linear_spec(L.ffn_out), act_spec([L.q_quant]), act_spec([L.k_quant]),
                                act_spec([L.v_quant]), ActSpec() if bool_attn else act_spec([L.probs_quant]), ln(L.ln_attn),
                                ln(L.ln_ffn), L.attention))
    a = model.arch
    return MemberSpec(a.num_heads, a.head_dim, "relu" if isinstance(model.layers[0].act, nn.ReLU) else "gelu",
                      a.layer_norm_eps, embedding_spec(model.word_embeddings), _np(model.position_embeddings.weight)[:max_len],
                      _np(model.token_type_embeddings.weight), ln(model.ln_emb), layers, linear_spec(model.pooler),
                      linear_spec(model.classifier))


INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # the graph inputs, int64 [batch, seq], in order


@dataclass
class EnsembleSpec:
    """The exported graph's content: members, normalised vote weights, vote rule, labels, metadata."""

    members: list[MemberSpec]
    weights: np.ndarray       # alpha_i / sum(alpha), float32 [m]
    vote: str                 # 'soft' (alpha-weighted softmax) | 'hard' (alpha-weighted one-hot of the argmax)
    labels: list[str] | None
    max_len: int
    metadata: dict

    @property
    def num_labels(self) -> int:
        """K: the width of probs and of every member's logits (1 for a regression head)."""
        return self.members[0].classifier.n

    @property
    def output_names(self) -> list[str]:
        """The graph outputs, in order: probs [B, K], then logits_<i> [B, K] per member."""
        return ["probs"] + [f"logits_{i}" for i in range(len(self.members))]


def ensemble_spec(ck, members: list[int] | None = None, precision: str = "binary") -> EnsembleSpec:
    """Describe a loaded checkpoint (bebert_deploy.checkpoint.LoadedCheckpoint) for export.

    precision 'binary': the ensemble members (``members`` = 0-based indices into the loaded ones, default all);
    'fp32': the full-precision teacher alone (the baseline).
    """
    import json

    man = ck.manifest
    meta = {"bebert.json": json.dumps({k: v for k, v in man.__dict__.items() if k != "members"} |
                                      {"members": [m.__dict__ for m in man.members]}, default=str),
            "labels": json.dumps(man.labels), "max_len": str(man.max_len), "task": man.task, "precision": precision}
    if precision == "fp32":
        if ck.teacher is None:
            raise ValueError(f"{ck.path} holds no full-precision teacher to export")
        return EnsembleSpec([member_spec(ck.teacher.eval(), man.max_len)], np.ones(1, np.float32), "soft", man.labels, man.max_len, meta)
    if precision != "binary":
        raise ValueError(f"unknown precision {precision!r}")
    idx = list(range(len(ck.members))) if members is None else members
    for i in idx:
        if not 0 <= i < len(ck.members):
            raise ValueError(f"member {i} out of range: the checkpoint has {len(ck.members)} members (0..{len(ck.members) - 1})")
    alphas = np.array([man.members[i].alpha for i in idx], np.float64)
    meta["members"] = json.dumps(idx)
    return EnsembleSpec([member_spec(ck.members[i].eval(), man.max_len) for i in idx], (alphas / alphas.sum()).astype(np.float32),
                        man.vote, man.labels, man.max_len, meta)
