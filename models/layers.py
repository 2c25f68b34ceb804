"""Quantized building blocks: QuantLinear, QuantEmbedding and SumOfParts (the TWS-split pair)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import binarize_weight, make_act_quantizer, ternarize_weight

WEIGHT_MODES = ("fp", "binary", "ternary")


def quantize_weight(w: torch.Tensor, mode: str, per_row: bool) -> torch.Tensor:
    """Apply the weight quantizer named by ``mode`` ('fp' | 'binary' | 'ternary') to a [N, K] weight."""
    if mode == "fp":
        return w
    if mode == "binary":
        return binarize_weight(w, per_row)
    if mode == "ternary":
        return ternarize_weight(w, per_row)
    raise ValueError(f"unknown weight mode {mode!r}; expected one of {WEIGHT_MODES}")


class QuantLinear(nn.Linear):
    """``y = act_quant(x) @ weight_quant(W).T + b``; x [..., K] float32 -> y [..., N] float32.

    ``weight_mode`` picks fp / binary (alpha*sign(W)) / ternary (TWN); ``per_row`` picks a per-output-row
    scale instead of BinaryBERT's per-tensor one. ``act_bits`` 32 leaves the input in full precision;
    ``act_symmetric`` False selects the asymmetric LSQ quantizer (used after ReLU).
    """

    def __init__(self, in_features: int, out_features: int, weight_mode: str = "fp", per_row: bool = False,
                 act_bits: int = 32, act_symmetric: bool = True, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        if weight_mode not in WEIGHT_MODES:
            raise ValueError(f"unknown weight mode {weight_mode!r}; expected one of {WEIGHT_MODES}")
        self.weight_mode = weight_mode
        self.per_row = per_row
        self.act_quant = make_act_quantizer(act_bits, act_symmetric)

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the forward pass uses it, [N, K] float32."""
        return quantize_weight(self.weight, self.weight_mode, self.per_row)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_quant(x), self.quantized_weight(), self.bias)


class QuantEmbedding(nn.Embedding):
    """Word embedding whose table is quantized per row (BinaryBERT's embed_layerwise=False).

    ids [B, L] int64 -> [B, L, D] float32, rows of ``weight_quant(table)``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, weight_mode: str = "fp", padding_idx=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.weight_mode = weight_mode
        self.per_row = True

    def quantized_weight(self) -> torch.Tensor:
        return quantize_weight(self.weight, self.weight_mode, True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Scales are per row, so quantizing the gathered rows equals gathering rows of the quantized table, and a
        # training step touches B*L rows instead of the whole (30522-row) table; the gradient is the same.
        rows = F.embedding(ids, self.weight, self.padding_idx)
        if self.weight_mode == "fp":
            return rows
        flat = rows.reshape(-1, rows.shape[-1])
        return quantize_weight(flat, self.weight_mode, True).reshape(rows.shape)


class SumOfParts(nn.Module):
    """Output = sum of the parts' outputs. After ternary weight splitting every quantized layer is two binary
    parts, each with its own scale and, as in the BinaryBERT code, its own input quantizer (one module shared by
    both with ``QuantConfig.tws_shared_act``)."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.parts[0](x)
        for p in self.parts[1:]:
            out = out + p(x)
        return out


def layer_parts(layer: nn.Module) -> list[nn.Module]:
    """The quantized parts of a linear/embedding slot: [layer] or the SumOfParts members."""
    return list(layer.parts) if isinstance(layer, SumOfParts) else [layer]
