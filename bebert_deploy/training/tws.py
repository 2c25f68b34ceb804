"""Ternary weight splitting (BinaryBERT): a trained ternary model -> an equivalent binary model with two
binary parts per quantized slot.

For a ternary weight t = alpha_T * sign(w) * [|w| > 0.7 mean|w|] the split gives w1, w2 with
binarize(w1) + binarize(w2) == t exactly (each half binarized with its own mean|.| scale):
  delta = (alpha_T * n - sum|w|) / (2 x)           x = number of zeros in t, n = entries (per tensor / row)
  nonzero t: w1 = m w, w2 = (1 - m) w,             m = (sum|a11| + sum|a22| - sum|a12|) / (2 sum|a11|)
  zero t:    w1 = (w > 0 ? w + delta : delta),     w2 = (w < 0 ? w - delta : -delta)
with a11 = w on nonzero entries, a12 / a22 the zero-entry parts of w1 / w2. Biases split in halves; each half
gets a copy of the input quantizer (its LSQ step; one module for both with QuantConfig.tws_shared_act). Computed
in float64, as the authors' code does.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from bebert_deploy.models.bert import BertClassifier
from bebert_deploy.models.layers import QuantEmbedding, QuantLinear, SumOfParts
from bebert_deploy.models.quantizers import ternary_params


def split_ternary_weight(w: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a [N, K] weight whose TWN ternarization is t into (w1, w2), both [N, K], same dtype as ``w``,
    such that binarize(w1) + binarize(w2) == ternarize(w) (scales per row when ``per_row``)."""
    w64 = w.detach().double()
    dims = dict(dim=1, keepdim=True) if per_row else {}
    delta_t, alpha_t = ternary_params(w64, per_row)
    nonzero = w64.abs() > delta_t
    n = w64.shape[1] if per_row else w64.numel()
    zeros = (~nonzero).double().sum(**dims).clamp_min(1)
    delta = (alpha_t * n - w64.abs().sum(**dims)) / (2 * zeros)
    a11 = torch.where(nonzero, w64, torch.zeros_like(w64))
    a12 = torch.where(nonzero, torch.zeros_like(w64), torch.where(w64 > 0, w64 + delta, delta.expand_as(w64)))
    a22 = torch.where(nonzero, torch.zeros_like(w64), torch.where(w64 < 0, w64 - delta, -delta.expand_as(w64)))
    s11 = a11.abs().sum(**dims)
    m = (s11 + a22.abs().sum(**dims) - a12.abs().sum(**dims)) / (2 * s11.clamp_min(1e-30))
    w1 = torch.where(nonzero, m * w64, a12)
    w2 = torch.where(nonzero, (1 - m) * w64, a22)
    return w1.to(w.dtype), w2.to(w.dtype)


def _split(layer, per_row: bool) -> SumOfParts:
    """Two binary copies of a ternary QuantLinear / QuantEmbedding (biases halved) whose sum equals it."""
    w1, w2 = split_ternary_weight(layer.weight, per_row)
    parts = []
    for w in (w1, w2):
        p = copy.deepcopy(layer)
        p.weight_mode = "binary"
        with torch.no_grad():
            p.weight.copy_(w)
            if getattr(p, "bias", None) is not None:
                p.bias.copy_(layer.bias / 2)
        parts.append(p)
    return SumOfParts(parts)


def tws_split(model: BertClassifier) -> BertClassifier:
    """Return the binary model (QuantConfig weight/embed 'binary', split=True) equivalent to a ternary one.

    ``model`` must have weight_mode 'ternary' (and embed_mode 'ternary' or 'fp'); it is not modified.
    """
    q = model.quant
    if q.weight_mode != "ternary" or q.split:
        raise ValueError("tws_split needs an unsplit ternary model (QuantConfig.weight_mode='ternary')")
    src = copy.deepcopy(model)
    for mod in list(src.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, QuantLinear) and child.weight_mode == "ternary":
                setattr(mod, name, _split(child, child.per_row))
            elif isinstance(child, QuantEmbedding) and child.weight_mode == "ternary":
                setattr(mod, name, _split(child, True))
    embed_mode = "binary" if q.embed_mode == "ternary" else q.embed_mode
    new_q = replace(q, weight_mode="binary", embed_mode=embed_mode, split=True)
    out = BertClassifier(model.arch, new_q)
    out.load_state_dict(src.state_dict())
    return out
