"""Quantizers with straight-through estimators (BinaryBERT / BiBERT / TWN formulas).

Every quantizer is a small module (or autograd function) whose docstring states the forward formula and
the gradient it passes. Facts follow the authors' code (../shared/TRAINING-FACTS.md): weight STEs are the
plain identity (no |w|<=1 clipping), LSQ steps are initialised lazily from the first batch.

Sign convention used everywhere in this project: sign(0) = +1, so the packed bit layout (bit 1 <=> -1,
see runtime/LAYOUT.md) can represent every quantized value exactly.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..runtime.quant_levels import lsq_levels


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """Elementwise sign with sign(0) = +1. Same shape and dtype as ``x``; values in {-1, +1}."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def weight_scale(w: torch.Tensor, per_row: bool) -> torch.Tensor:
    """mean|w| per tensor (shape []) or per output row (shape [N, 1]) of a [N, K] weight."""
    a = w.abs()
    return a.mean(dim=1, keepdim=True) if per_row else a.mean()


class _BinaryWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, per_row: bool) -> torch.Tensor:
        return weight_scale(w, per_row) * sign_pm1(w)

    @staticmethod
    def backward(ctx, g):
        return g, None


def binarize_weight(w: torch.Tensor, per_row: bool = False) -> torch.Tensor:
    """BWN binarization: ``alpha * sign(w)``, alpha = mean|w| (per tensor, or per row of a [N, K] weight).

    Backward: identity STE (BinaryBERT's BwnQuantizer). Output has ``w``'s shape and dtype.
    """
    return _BinaryWeight.apply(w, per_row)


def ternary_params(w: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN threshold and scale of a [N, K] weight.

    delta = 0.7 * mean|w|; alpha = mean of |w| over entries with |w| > delta (per tensor or per row).
    Returns (delta, alpha), each shape [] or [N, 1].
    """
    a = w.abs()
    if per_row:
        delta = 0.7 * a.mean(dim=1, keepdim=True)
        mask = (a > delta).to(w.dtype)
        alpha = (a * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp_min(1)
    else:
        delta = 0.7 * a.mean()
        mask = (a > delta).to(w.dtype)
        alpha = (a * mask).sum() / mask.sum().clamp_min(1)
    return delta, alpha


def _ternary_signs(w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """sign(w) * [|w| > delta]: values in {-1, 0, +1}, w's shape."""
    return torch.sign(w) * (w.abs() > delta).to(w.dtype)


class _TernaryWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, per_row: bool) -> torch.Tensor:
        delta, alpha = ternary_params(w, per_row)
        return alpha * _ternary_signs(w, delta)

    @staticmethod
    def backward(ctx, g):
        return g, None


def ternarize_weight(w: torch.Tensor, per_row: bool = False) -> torch.Tensor:
    """TWN ternarization ``alpha * sign(w) * [|w| > 0.7 mean|w|]``; identity STE. Same shape as ``w``."""
    return _TernaryWeight.apply(w, per_row)


def ternary_sign_planes(w: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A ternarized weight as two binary halves with ONE shared scale (a tied TWS slot, exact):
    ternarize(w) == scale * (planes[0] + planes[1]).

    w float [N, K] -> (planes float +-1 [2, N, K], scale float [N]) with scale = alpha_T / 2 (per row, or the
    per-tensor alpha_T broadcast to every row). t > 0 -> (+1, +1), t < 0 -> (-1, -1), t == 0 -> (+1, -1).
    Halving a float is exact, so the two halves reproduce alpha_T bit for bit.
    """
    delta, alpha = ternary_params(w, per_row)
    t = _ternary_signs(w, delta)
    one = torch.ones_like(w)
    planes = torch.stack([torch.where(t < 0, -one, one), torch.where(t > 0, one, -one)])
    return planes, (alpha / 2).reshape(-1).expand(w.shape[0]).clone()


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    return (x - x * scale).detach() + x * scale


class LsqActQuantizer(nn.Module):
    """LSQ activation quantizer with a learnable per-tensor step ``s`` (BinaryBERT's A4 setting).

    symmetric:  q = clamp(round(x / s), -2^(b-1), 2^(b-1)-1);              x_hat = s * q
    asymmetric: m = min(x) (dynamic, per example: over every dimension but the first, so an example's output
                never depends on the other examples of its batch);
                q = clamp(round((x - m) / s), 0, 2^b - 1);                  x_hat = s * q + m
    The step's gradient is scaled by 1/sqrt(numel * Qp) and the round uses a straight-through estimator.
    The step is initialised on the first batch: 2*mean|x|/sqrt(Qp) (sym) or 4*mean|x-m|/sqrt(Qp) (asym).
    Rounding is half-to-even (torch.round), matching ONNX Round and the C++ kernels' nearbyint.
    """

    def __init__(self, bits: int = 4, symmetric: bool = True):
        super().__init__()
        self.bits = bits
        self.symmetric = symmetric
        self.qn, self.qp = lsq_levels(bits, symmetric)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            offset = torch.zeros((), dtype=x.dtype, device=x.device)
        else:
            offset = x.amin(dim=tuple(range(1, x.dim())), keepdim=True) if x.dim() > 1 else x.min()
        xs = x - offset
        if not bool(self.initialized):
            with torch.no_grad():
                k = 2.0 if self.symmetric else 4.0
                self.step.copy_((k * xs.abs().mean() / math.sqrt(self.qp)).clamp_min(1e-8))
                self.initialized.fill_(True)
        s = _grad_scale(self.step, 1.0 / math.sqrt(x.numel() * self.qp))
        q = _round_ste(torch.clamp(xs / s, self.qn, self.qp))
        return q * s + offset


class _SignAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign_pm1(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class SignActQuantizer(nn.Module):
    """1-bit activations (BiBERT): sign(x) in {-1,+1} (sign(0)=+1); STE gradient 1[|x| <= 1]."""

    bits = 1
    symmetric = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SignAct.apply(x)


class _BoolAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class BoolAttention(nn.Module):
    """BiBERT's Bi-Attention: binary attention weights bool(scores) = 1[score > 0] in {0, 1}, replacing
    softmax (for +-1 queries and keys this maximises the information entropy of the binarized weights);
    STE gradient 1[|score| <= 1]. scores [B, heads, L, L] (mask added) -> float {0, 1} of the same shape."""

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return _BoolAct.apply(scores)


def make_act_quantizer(bits: int, symmetric: bool) -> nn.Module:
    """Activation quantizer for ``bits`` in {1, 4, 8, 32}; 32 means full precision (nn.Identity)."""
    if bits >= 32:
        return nn.Identity()
    if bits == 1:
        return SignActQuantizer()
    if bits in (2, 4, 8):
        return LsqActQuantizer(bits, symmetric)
    raise ValueError(f"unsupported activation bits {bits}: use 1, 2, 4, 8 or 32")
