"""The exported graph, written once: a BEBERT member (embeddings, encoder layers, pooler/classifier), the LSQ
fake-quantizer and the members' weighted vote, emitted against the small set of primitives of ``Primitives``.

``onnx_export.OnnxLowering`` and ``tflite_export.TfliteLowering`` implement the primitives; every operation of
the forward pass (and its order, which float results depend on) lives here, so a change to the model is made
once and the parity tests of both back-ends guard it. The graph reproduces ``models/bert.py`` op for op.

Tensor handles are opaque to this module (ONNX value names, TFLite tensor indices). Shapes in the docstrings:
B batch, L sequence, H hidden, D head dim, K labels; float tensors are float32, ids int64.
"""
from __future__ import annotations

import math

import numpy as np

from bebert_deploy.runtime.quant_levels import lsq_levels

from .lowering import ActSpec, EmbeddingSpec, EnsembleSpec, LayerSpec, LinearSpec, MemberSpec, packed_qkv_linear


class Primitives:
    """What a back-end implements. ``T`` below is the back-end's tensor handle. Binary operators broadcast
    numpy-style; every float primitive must compute what the PyTorch op of the same name computes."""

    # --- constants and elementwise arithmetic (float32) ---------------------------------------------------
    def const(self, value) -> "T":
        """A float32 constant (scalar or array)."""
        raise NotImplementedError

    def add(self, a, b):
        """a + b."""
        raise NotImplementedError

    def sub(self, a, b):
        """a - b."""
        raise NotImplementedError

    def mul(self, a, b):
        """a * b."""
        raise NotImplementedError

    def div(self, a, b):
        """a / b."""
        raise NotImplementedError

    def round(self, x):
        """Round half to even (torch.round)."""
        raise NotImplementedError

    def clip(self, x, lo: float, hi: float):
        """min(max(x, lo), hi) with float constants lo, hi."""
        raise NotImplementedError

    def sign(self, x):
        """+-1.0 with sign(0) = +1 (the project's convention, runtime/LAYOUT.md)."""
        raise NotImplementedError

    def positive(self, x):
        """float 1[x > 0]."""
        raise NotImplementedError

    def to_float(self, x):
        """Cast an integer tensor to float32."""
        raise NotImplementedError

    def min_per_example(self, x):
        """[B, ...] -> [B, 1, ..., 1]: the minimum over every axis but the first (same rank as x)."""
        raise NotImplementedError

    # --- shapes -------------------------------------------------------------------------------------------
    def reshape(self, x, shape: list[int]):
        """ONNX Reshape semantics: 0 copies the input's dimension at that index, -1 is inferred."""
        raise NotImplementedError

    def transpose(self, x, perm: list[int]):
        raise NotImplementedError

    def take(self, x, axis: int, index: int):
        """x[..., index, ...] along ``axis`` (the axis is removed), e.g. [B, L, H] -> [B, H] for the [CLS] row."""
        raise NotImplementedError

    # --- layers -------------------------------------------------------------------------------------------
    def matmul(self, a, b, transpose_b: bool = False):
        """Attention's batched a @ b (or a @ b^T over the last two axes), rank 4:
        [B, heads, M, K] x [B, heads, K, N] -> [B, heads, M, N]."""
        raise NotImplementedError

    def softmax(self, x):
        """Softmax over the last axis."""
        raise NotImplementedError

    def activation(self, x, kind: str):
        """'relu' | 'gelu' (exact erf form, torch.nn.GELU()) | 'tanh'."""
        raise NotImplementedError

    def layer_norm(self, x, wb: tuple[np.ndarray, np.ndarray], eps: float, name: str):
        """LayerNorm over the last axis with weight/bias float32 [H]."""
        raise NotImplementedError

    def add_layer_norm(self, x, residual, wb: tuple[np.ndarray, np.ndarray], eps: float, name: str):
        """LayerNorm(residual + x) over the last axis: an encoder layer's residual connection. Lowerings with a
        fused op (runtime/OPS.md, AddLayerNorm) override this; the rest spell it as an add and ``layer_norm``."""
        return self.layer_norm(self.add(residual, x), wb, eps, name)

    def linear(self, x, spec: LinearSpec, name: str):
        """[..., K] -> [..., N]: act(x) W^T + b (binary, TWS-split or float; the input quantizer included, see
        ``fake_quant``)."""
        raise NotImplementedError

    def binary_linear(self, x, spec: LinearSpec, name: str, relu: bool):
        """A binary layer as the lowering's packed-bit linear op (runtime/OPS.md), max(y, 0) fused into its output
        when ``relu``; None when this lowering writes binary layers with stock ops (then ``linear`` and
        ``activation`` spell the layer out)."""
        raise NotImplementedError

    def embedding(self, ids, word: EmbeddingSpec, position: np.ndarray, name: str, position_name: str):
        """ids int64 [B, L] -> word rows of ``ids`` plus the first L rows of ``position`` float32 [max_len, H]:
        float32 [B, L, H]."""
        raise NotImplementedError

    def lookup(self, table: np.ndarray, ids, name: str):
        """Rows of a float32 table [V, H] at ids int64 [B, L] -> [B, L, H]."""
        raise NotImplementedError

    def one_hot_argmax(self, x, k: int):
        """[B, K] -> float32 [B, K]: 1 at the argmax of each row (first one on ties), 0 elsewhere."""
        raise NotImplementedError

    def quant_attention(self, q, k, v, mask_add, layer: LayerSpec, num_heads: int, name: str):
        """The fused attention core of a ``fusable_attention`` layer, or None when this lowering has no such op
        (the graph then spells it out): q, k, v float32 [B, L, H] (projections before their quantizers),
        mask_add [B, 1, 1, L] -> the context [B, L, H] (runtime/OPS.md, QuantAttention). With k = v = None, q is
        the packed [B, L, 3 H] output of one Q/K/V linear (lowerings whose ``packs_qkv`` is true; they must then return
        the context, since the graph has no separate projections to spell the attention out with)."""
        raise NotImplementedError

    # whether quant_attention takes one packed Q/K/V tensor, so a layer whose Q, K and V share an input quantizer
    # runs them as one linear op (one lookup table per token instead of three)
    packs_qkv = False


def fake_quant(low: Primitives, x, act: ActSpec, part: int = 0):
    """An activation quantizer (models/quantizers.py) with the same float operations as PyTorch: x unchanged
    (float), sign(x) (sign), or LSQ ``clamp(round((x - m) / step), qn, qp) * step + m`` with m = 0 (symmetric)
    or the per-example minimum (asymmetric). ``part`` picks the step of a TWS half. Same shape as x."""
    if act.mode == "float":
        return x
    if act.mode == "sign":
        return low.sign(x)
    qn, qp = lsq_levels(act.bits, act.symmetric)
    step = low.const(act.steps[part])
    if act.symmetric:
        return low.mul(low.clip(low.round(low.div(x, step)), qn, qp), step)
    mn = low.min_per_example(x)
    return low.add(low.mul(low.clip(low.round(low.div(low.sub(x, mn), step)), qn, qp), step), mn)


def fake_quant_parts(low: Primitives, x, act: ActSpec, parts: int) -> list:
    """``fake_quant`` of x for each of ``parts`` TWS halves; halves with one step (one shared input quantizer,
    ``QuantConfig.tws_shared_act``) reuse one result instead of quantizing x again."""
    out = []
    for s in range(parts):
        same = s > 0 and (act.mode != "int" or act.steps[s] == act.steps[s - 1])
        out.append(out[-1] if same else fake_quant(low, x, act, s))
    return out


def linear_relu(low: Primitives, x, spec: LinearSpec, name: str):
    """relu(linear(x)), the FFN's first layer: one packed-bit op with the ReLU fused where the lowering has one
    (a binary layer with custom ops), else ``linear`` then ``activation``."""
    y = low.binary_linear(x, spec, name, relu=True) if spec.binary else None
    return y if y is not None else low.activation(low.linear(x, spec, name), "relu")


def fusable_attention(layer: LayerSpec) -> bool:
    """Softmax attention with symmetric LSQ q/k/v and an asymmetric LSQ probability quantizer of one bit width
    (BinaryBERT's A4 layer): what the fused QuantAttention op computes."""
    acts = (layer.q_act, layer.k_act, layer.v_act)
    return (layer.attention == "softmax" and all(a.mode == "int" and a.symmetric and len(a.steps) == 1 for a in acts)
            and layer.probs_act.mode == "int" and not layer.probs_act.symmetric and len(layer.probs_act.steps) == 1
            and len({a.bits for a in (*acts, layer.probs_act)}) == 1)


def attention_steps(layer: LayerSpec) -> np.ndarray:
    """The QuantAttention op's steps input of a ``fusable_attention`` layer: float32 [4] = (q, k, v, probs)."""
    return np.array([a.steps[0] for a in (layer.q_act, layer.k_act, layer.v_act, layer.probs_act)], np.float32)


def encoder_layer(low: Primitives, layer: LayerSpec, m: MemberSpec, h, mask_add, name: str):
    """One post-LN BERT layer: h float32 [B, L, H], mask_add [B, 1, 1, L] -> [B, L, H]."""
    nh, hd = m.num_heads, m.head_dim

    def heads(t, act):  # [B, L, H] -> quantized [B, heads, L, D]
        return low.transpose(low.reshape(fake_quant(low, t, act), [0, 0, nh, hd]), [0, 2, 1, 3])

    qkv = packed_qkv_linear(layer) if fusable_attention(layer) and low.packs_qkv else None
    if qkv is not None:
        ctx = low.quant_attention(low.linear(h, qkv, name + "qkv"), None, None, mask_add, layer, nh, name + "attention")
    else:
        ql, kl, vl = (low.linear(h, spec, name + part) for spec, part in
                      ((layer.query, "query"), (layer.key, "key"), (layer.value, "value")))
        ctx = low.quant_attention(ql, kl, vl, mask_add, layer, nh, name + "attention") if fusable_attention(layer) else None
    if ctx is None:
        q, k, v = heads(ql, layer.q_act), heads(kl, layer.k_act), heads(vl, layer.v_act)
        scores = low.add(low.div(low.matmul(q, k, transpose_b=True), low.const(math.sqrt(hd))), mask_add)
        if layer.attention == "bool":  # Bi-Attention: exact, the scores of +-1 queries/keys are multiples of 1/sqrt(d)
            probs = low.positive(scores)
        else:
            probs = fake_quant(low, low.softmax(scores), layer.probs_act)
        ctx = low.reshape(low.transpose(low.matmul(probs, v), [0, 2, 1, 3]), [0, 0, -1])
    h = low.add_layer_norm(low.linear(ctx, layer.attn_out, name + "attn_out"), h, layer.ln_attn, m.eps, name + "ln_attn")
    if m.hidden_act == "relu":
        inner = linear_relu(low, h, layer.ffn_in, name + "ffn_in")
    else:
        inner = low.activation(low.linear(h, layer.ffn_in, name + "ffn_in"), m.hidden_act)
    return low.add_layer_norm(low.linear(inner, layer.ffn_out, name + "ffn_out"), h, layer.ln_ffn, m.eps, name + "ln_ffn")


def member(low: Primitives, m: MemberSpec, ids, mask, types, prefix: str):
    """One BERT classifier: ids / mask / types int64 [B, L] -> logits float32 [B, K]. Weight names start with
    ``prefix``."""
    h = low.add_layer_norm(low.lookup(m.token_type, types, f"{prefix}token_type"),
                           low.embedding(ids, m.word, m.position, f"{prefix}word", f"{prefix}position"), m.ln_emb, m.eps,
                           f"{prefix}ln_emb")
    # additive mask (1 - mask) * MASK_VALUE, broadcast over heads and query rows: [B, 1, 1, L]
    mask_add = low.reshape(low.mul(low.sub(low.const(1.0), low.to_float(mask)), low.const(m.mask_value)), [0, 1, 1, -1])
    for i, layer in enumerate(m.layers):
        h = encoder_layer(low, layer, m, h, mask_add, f"{prefix}l{i}.")
    pooled = low.activation(low.linear(low.take(h, 1, 0), m.pooler, f"{prefix}pooler"), "tanh")
    return low.linear(pooled, m.classifier, f"{prefix}classifier")


def vote(low: Primitives, logits: list, weights: np.ndarray, rule: str, k: int):
    """probs float32 [B, K] = sum_i weights[i] * p_i, p_i = softmax(logits_i) ('soft'), the one-hot of its
    argmax ('hard'), or the logits themselves for a regression head (K = 1)."""
    total = None
    for lg, w in zip(logits, weights):
        if k == 1:
            p = lg
        elif rule == "hard":
            p = low.one_hot_argmax(lg, k)
        else:
            p = low.softmax(lg)
        p = low.mul(p, low.const(w))
        total = p if total is None else low.add(total, p)
    return total


def ensemble(low: Primitives, spec: EnsembleSpec, ids, mask, types) -> dict:
    """The whole exported graph: {'probs': ..., 'logits_0': ..., ...} in ``spec.output_names`` order."""
    logits = [member(low, m, ids, mask, types, f"m{i}.") for i, m in enumerate(spec.members)]
    probs = vote(low, logits, spec.weights, spec.vote, spec.num_labels)
    return dict(zip(spec.output_names, [probs, *logits]))
