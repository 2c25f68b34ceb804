"""Distillation losses (BinaryBERT / TinyBERT style).

Modes: 'none' (hard-label CE / MSE), 'pred' (prediction-layer soft cross-entropy), 'two_stage' (stage 1:
attention-score + hidden-state MSE; stage 2: prediction-layer KD), as in BinaryBERT's kd_learner; and BiBERT's
one-stage loss for BiBERT members (prediction KD + direction-matching distillation, ``bibert_loss``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KD_MODES = ("none", "pred", "two_stage")


def _weighted_mean(per: torch.Tensor, sample_weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-example losses [B]; with AdaBoost weights [B] (mean 1 over the dataset) a weighted mean."""
    return per.mean() if sample_weights is None else (per * sample_weights).sum() / per.shape[0]


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
                       sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of -sum_c softmax(t/T)_c * log_softmax(s/T)_c; logits [B, C] -> scalar.

    (The authors' helper averages over classes too, which only rescales the loss by 1/C.)
    """
    per = -(F.softmax(teacher / temperature, -1) * F.log_softmax(student / temperature, -1)).sum(-1)
    return _weighted_mean(per, sample_weights)


def prediction_loss(student: torch.Tensor, teacher: torch.Tensor, regression: bool,
                    sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Prediction-layer KD: soft CE for classification, MSE of the outputs for regression. AdaBoost's sample
    weights [B] scale each example's term, as they scale the hard-label loss: without them a KD-trained member
    would never see the boosting weights (BEBERT's own code resamples instead: --paper-boosting)."""
    if regression:
        return _weighted_mean(((student - teacher) ** 2).reshape(student.shape[0], -1).mean(-1), sample_weights)
    return soft_cross_entropy(student, teacher, sample_weights=sample_weights)


def _normalized_l2(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """BiBERT's distance || s / ||s||_F - t / ||t||_F ||_2, both norms over the whole batch tensor."""
    return torch.linalg.vector_norm(s / torch.linalg.vector_norm(s) - t / torch.linalg.vector_norm(t))


def bibert_loss(s_logits, t_logits, s_int: dict, t_int: dict, labels, regression: bool,
                sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """BiBERT's one-stage loss (htqin/BiBERT quant_task_glue.py): prediction KD + 0.5 x hard-label loss +
    direction-matching distillation (DMD) on the query, key and value similarity matrices X X^T / sqrt(d) of
    every layer (student from its pre-sign Q/K/V) + the same normalized distance on the L+1 hidden states.
    Teacher and student have the same depth and heads (BiBERT binarizes the full-width teacher)."""
    loss = prediction_loss(s_logits, t_logits, regression, sample_weights)
    loss = loss + 0.5 * task_loss(s_logits, labels, regression, sample_weights)
    for s_qkv, t_qkv in zip(s_int["qkv"], t_int["qkv"]):
        for s, t in zip(s_qkv, t_qkv):
            d = s.shape[-1] ** 0.5
            loss = loss + _normalized_l2(s @ s.transpose(-1, -2) / d, t @ t.transpose(-1, -2) / d)
    for s, t in zip(s_int["hidden_states"], t_int["hidden_states"]):
        loss = loss + _normalized_l2(s, t)
    return loss


def intermediate_loss(s_int: dict, t_int: dict, teacher_heads: list[list[int]] | None) -> torch.Tensor:
    """Stage-1 loss: sum over layers of MSE(attention scores) + sum over L+1 hidden states of MSE.

    Masked score entries (<= -1e2) are zeroed on both sides (TinyBERT). ``teacher_heads[l]`` lists which
    teacher heads the student's heads of layer l correspond to (pruned students); None = same heads.
    """
    loss = 0.0  # a Python float adopts the device of the first term (CPU or CUDA)
    for l, (s, t) in enumerate(zip(s_int["attention_scores"], t_int["attention_scores"])):
        if teacher_heads is not None:
            t = t[:, teacher_heads[l]]
        s = torch.where(s <= -1e2, torch.zeros_like(s), s)
        t = torch.where(t <= -1e2, torch.zeros_like(t), t)
        loss = loss + F.mse_loss(s, t)
    for s, t in zip(s_int["hidden_states"], t_int["hidden_states"]):
        loss = loss + F.mse_loss(s, t)
    return loss


def task_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool,
              sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hard-label loss; with ``sample_weights`` [B] (mean 1 over the dataset) a weighted mean."""
    if regression:
        per = (logits.squeeze(-1) - labels.float()) ** 2
    else:
        per = F.cross_entropy(logits, labels, reduction="none")
    return _weighted_mean(per, sample_weights)
