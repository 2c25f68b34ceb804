"""BERT sequence classifier with BinaryBERT quantization points.

Why our own module instead of transformers' BertModel: the binary model needs quantizers at exact places
(inputs of every linear, Q/K/V after projection, attention probabilities), a ReLU FFN at A4, the
pre-softmax attention scores for distillation, a width (heads, FFN neurons) that differs from the base
config after pruning, and a forward pass the exporters reproduce op for op. transformers still provides
the configs, tokenizers and the weights' naming, which ``load_hf_state_dict`` maps onto this module.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .layers import QuantEmbedding, QuantLinear, SumOfParts, layer_parts
from .quantizers import BoolAttention, make_act_quantizer

MASK_VALUE = -10000.0  # additive attention mask, as in the BERT/BinaryBERT code; the exporters use it too


@dataclass
class BertArch:
    """Shape of a BERT classifier. ``num_heads`` and ``intermediate_size`` are the kept width (after pruning)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    head_dim: int = 32
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    num_labels: int = 2
    pad_token_id: int = 0
    dropout: float = 0.1

    @classmethod
    def from_hf_config(cls, path: str | Path, num_labels: int) -> "BertArch":
        """Read a Hugging Face BERT ``config.json`` (a file or the folder holding it)."""
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise FileNotFoundError(f"no BERT config.json at {p}")
        c = json.loads(p.read_text())
        if c.get("model_type", "bert") != "bert":
            raise ValueError(f"{p}: model_type {c.get('model_type')!r} is not 'bert'")
        return cls(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"], head_dim=c["hidden_size"] // c["num_attention_heads"],
            intermediate_size=c["intermediate_size"], max_position_embeddings=c["max_position_embeddings"],
            type_vocab_size=c.get("type_vocab_size", 2), layer_norm_eps=c.get("layer_norm_eps", 1e-12),
            hidden_act=c.get("hidden_act", "gelu"), num_labels=num_labels, pad_token_id=c.get("pad_token_id", 0),
            dropout=c.get("hidden_dropout_prob", 0.1),
        )


@dataclass
class QuantConfig:
    """Which tensors are quantized and how (BinaryBERT W1-E1-A4 by default).

    weight_mode: 'fp' | 'binary' | 'ternary' for every encoder linear and the pooler; the classifier,
    LayerNorms, biases, position and token-type embeddings stay full precision (as in the authors' code).
    per_row: per-output-row weight scale instead of per-tensor. embed_mode: word-embedding quantizer (per row).
    act_bits: 32 (none), 8, 4 (LSQ) or 1 (sign). At act_bits < 32 the FFN uses ReLU (BinaryBERT's A4 switch).
    """

    weight_mode: str = "binary"
    per_row: bool = False
    embed_mode: str = "binary"
    act_bits: int = 4
    split: bool = False  # after ternary weight splitting: every quantized slot is a SumOfParts of two binaries
    attention: str = "softmax"  # 'softmax', or 'bool': BiBERT's Bi-Attention (binary weights, no softmax)
    # Q, K and V read one input quantizer (one per TWS half) instead of three: they quantize the same h, and one
    # quantized input lets the exporters run the three projections as one GEMM over one lookup table.
    qkv_shared_act: bool = False
    # The two TWS halves of each slot read one input quantizer (each keeps its own weight scale): one quantized
    # input per slot, so the kernels build one set of lookup tables where untied halves need two.
    tws_shared_act: bool = False

    @property
    def member_type(self) -> str:
        """'bibert' (W1-E1-A1 with Bi-Attention), 'binarybert' (binary weights, multi-bit activations), 'fp',
        or 'quantized' for any other mix."""
        if self.attention == "bool" and self.act_bits == 1:
            return "bibert"
        if self.is_fp:
            return "fp"
        return "binarybert" if self.weight_mode == "binary" and self.attention == "softmax" else "quantized"

    @property
    def is_fp(self) -> bool:
        return self.weight_mode == "fp" and self.embed_mode == "fp" and self.act_bits >= 32


FP_QUANT = QuantConfig(weight_mode="fp", embed_mode="fp", act_bits=32)
# BiBERT (Qin et al. 2022): 1-bit weights with per-row scales, 1-bit word embeddings, sign activations at every
# linear input, Bi-Attention. (BiBERT's code also re-centres each weight row before taking signs; not done here.)
BIBERT_QUANT = QuantConfig(weight_mode="binary", per_row=True, embed_mode="binary", act_bits=1, attention="bool")


def quant_linear(quant: QuantConfig, k: int, n: int, act_symmetric: bool = True) -> nn.Module:
    """A quantized linear slot [.., k] -> [.., n] as ``quant`` says: one QuantLinear, or two summed (TWS)."""
    def one():
        return QuantLinear(k, n, quant.weight_mode, quant.per_row, quant.act_bits, act_symmetric)
    if not quant.split:
        return one()
    halves = [one(), one()]
    if quant.tws_shared_act:
        halves[1].act_quant = halves[0].act_quant  # one module: one LSQ step, learned from both halves
    return SumOfParts(halves)


def quant_embedding(quant: QuantConfig, vocab: int, dim: int, pad: int) -> nn.Module:
    """The word-embedding slot [B, L] -> [B, L, dim]: one QuantEmbedding, or two summed (TWS)."""
    def one():
        return QuantEmbedding(vocab, dim, quant.embed_mode, padding_idx=pad)
    return SumOfParts([one(), one()]) if quant.split and quant.embed_mode != "fp" else one()


class BertLayer(nn.Module):
    """One transformer block: [B, L, H] float32 -> [B, L, H] float32 (plus attention scores for KD)."""

    def __init__(self, arch: BertArch, quant: QuantConfig):
        super().__init__()
        H, A, I = arch.hidden_size, arch.num_heads * arch.head_dim, arch.intermediate_size
        ab = quant.act_bits
        self.num_heads, self.head_dim = arch.num_heads, arch.head_dim
        self.query = quant_linear(quant, H, A)
        self.key = quant_linear(quant, H, A)
        self.value = quant_linear(quant, H, A)
        if quant.qkv_shared_act:
            for slot in (self.key, self.value):
                for part, q_part in zip(layer_parts(slot), layer_parts(self.query)):
                    part.act_quant = q_part.act_quant  # one module: one LSQ step, learned from all three
        self.attn_out = quant_linear(quant, A, H)
        self.ffn_in = quant_linear(quant, H, I)
        if quant.attention not in ("softmax", "bool"):
            raise ValueError(f"unknown attention {quant.attention!r}; expected 'softmax' or 'bool'")
        # BinaryBERT switches the FFN to ReLU for multi-bit activations; with sign activations ReLU would make
        # every FFN output input +1, so BiBERT keeps GELU.
        relu = 2 <= ab < 32
        self.ffn_out = quant_linear(quant, I, H, act_symmetric=not relu)
        self.act = nn.ReLU() if relu else nn.GELU()
        self.q_quant = make_act_quantizer(ab, True)
        self.k_quant = make_act_quantizer(ab, True)
        self.v_quant = make_act_quantizer(ab, True)
        self.attention = quant.attention
        self.probs_quant = BoolAttention() if quant.attention == "bool" else make_act_quantizer(ab, False)
        self.ln_attn = nn.LayerNorm(H, eps=arch.layer_norm_eps)
        self.ln_ffn = nn.LayerNorm(H, eps=arch.layer_norm_eps)
        self.dropout = nn.Dropout(arch.dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, h: torch.Tensor, mask_add: torch.Tensor, head_mask: torch.Tensor | None = None):
        """Returns (h [B, L, H], attention scores [B, heads, L, L] with the mask added, FFN inner [B, L, I],
        (q, k, v) before their quantizers [B, heads, L, head_dim] each, for BiBERT's direction-matching KD)."""
        qf, kf, vf = self._heads(self.query(h)), self._heads(self.key(h)), self._heads(self.value(h))
        q, k, v = self.q_quant(qf), self.k_quant(kf), self.v_quant(vf)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask_add
        if self.attention == "bool":  # Bi-Attention: no softmax; dropout on the scores as in BiBERT's code
            probs = self.probs_quant(self.dropout(scores))
        else:
            probs = self.probs_quant(self.dropout(F.softmax(scores, dim=-1)))
        if head_mask is not None:  # [num_heads], used for head-importance scores when pruning
            probs = probs * head_mask.view(1, -1, 1, 1)
        ctx = (probs @ v).transpose(1, 2).reshape(h.shape[0], h.shape[1], -1)
        h = self.ln_attn(h + self.dropout(self.attn_out(ctx)))
        inner = self.act(self.ffn_in(h))
        h = self.ln_ffn(h + self.dropout(self.ffn_out(inner)))
        return h, scores, inner, (qf, kf, vf)


class BertClassifier(nn.Module):
    """BERT encoder + pooler + linear classifier.

    forward(input_ids [B, L] int64, attention_mask [B, L] int64, token_type_ids [B, L] int64)
    -> logits [B, num_labels] float32; with ``return_internals`` also a dict holding ``hidden_states``
    (L+1 tensors [B, L, H]: embedding output and every layer's output), ``attention_scores`` (per layer,
    pre-softmax [B, heads, L, L] with the mask added), ``ffn_inner`` (per layer [B, L, I]) and ``qkv`` (per layer
    the query, key and value [B, heads, L, head_dim] before their activation quantizers).
    """

    def __init__(self, arch: BertArch, quant: QuantConfig = FP_QUANT):
        super().__init__()
        self.arch, self.quant = arch, quant
        H = arch.hidden_size
        self.word_embeddings = quant_embedding(quant, arch.vocab_size, H, arch.pad_token_id)
        self.position_embeddings = nn.Embedding(arch.max_position_embeddings, H)
        self.token_type_embeddings = nn.Embedding(arch.type_vocab_size, H)
        self.ln_emb = nn.LayerNorm(H, eps=arch.layer_norm_eps)
        self.dropout = nn.Dropout(arch.dropout)
        self.layers = nn.ModuleList(BertLayer(arch, quant) for _ in range(arch.num_layers))
        self.pooler = quant_linear(quant, H, H)
        self.classifier = nn.Linear(H, arch.num_labels)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """Embedding output (after LayerNorm, before dropout): [B, L, H] float32."""
        L = input_ids.shape[1]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        pos = torch.arange(L, device=input_ids.device).unsqueeze(0)
        e = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        return self.ln_emb(e)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_internals: bool = False,
                embedding_noise_std: float = 0.0, head_masks: list[torch.Tensor] | None = None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask_add = (1.0 - attention_mask[:, None, None, :].float()) * MASK_VALUE
        h = self.embed(input_ids, token_type_ids)
        if embedding_noise_std > 0:  # robustness study (BEBERT section 4.2): Gaussian noise on the embedding output
            h = h + torch.randn_like(h) * embedding_noise_std
        h = self.dropout(h)
        hidden, scores, inner, qkv = [h], [], [], []
        for i, layer in enumerate(self.layers):
            h, s, f, t = layer(h, mask_add, None if head_masks is None else head_masks[i])
            hidden.append(h)
            scores.append(s)
            inner.append(f)
            qkv.append(t)
        pooled = torch.tanh(self.pooler(h[:, 0]))
        logits = self.classifier(self.dropout(pooled))
        if return_internals:
            return logits, {"hidden_states": hidden, "attention_scores": scores, "ffn_inner": inner, "qkv": qkv}
        return logits


# Our parameter names <- Hugging Face BertModel names (per layer, "{i}" is the layer index).
_HF_LAYER_NAMES = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attn_out": "attention.output.dense", "ln_attn": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ln_ffn": "output.LayerNorm",
}
_HF_TOP_NAMES = {
    "word_embeddings": "embeddings.word_embeddings", "position_embeddings": "embeddings.position_embeddings",
    "token_type_embeddings": "embeddings.token_type_embeddings", "ln_emb": "embeddings.LayerNorm",
    "pooler": "pooler.dense",
}


def load_hf_state_dict(model: BertClassifier, folder: str | Path) -> list[str]:
    """Copy a Hugging Face BERT checkpoint (``model.safetensors`` in ``folder``) into ``model``.

    Accepts names with or without the ``bert.`` prefix. Returns the names of our parameters that the
    checkpoint did not provide (the classifier, and the pooler if absent), which keep their random init.
    """
    from safetensors.torch import load_file

    f = Path(folder) / "model.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"no model.safetensors in {folder}")
    src = {k.removeprefix("bert."): v for k, v in load_file(str(f)).items()}
    own = model.state_dict()
    missing = []
    for name in own:
        if name.startswith("layers."):
            _, i, mod, leaf = name.split(".", 3)
            hf = f"encoder.layer.{i}.{_HF_LAYER_NAMES.get(mod, mod)}.{leaf}"
        else:
            mod, leaf = name.split(".", 1)
            hf = f"{_HF_TOP_NAMES.get(mod, mod)}.{leaf}"
        leaf = name.rsplit(".", 1)[-1]
        if hf in src and src[hf].shape == own[name].shape:
            own[name] = src[hf]
        elif leaf in ("step", "initialized"):
            continue
        else:
            missing.append(name)
    model.load_state_dict(own)
    return missing

