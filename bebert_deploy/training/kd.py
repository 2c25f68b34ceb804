"""Distillation losses (BinaryBERT / TinyBERT style).

Modes: 'none' (hard-label CE / MSE), 'pred' (prediction-layer soft cross-entropy), 'two_stage' (stage 1:
attention-score + hidden-state MSE; stage 2: prediction-layer KD), as in BinaryBERT's kd_learner.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KD_MODES = ("none", "pred", "two_stage")


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over the batch of -sum_c softmax(t/T)_c * log_softmax(s/T)_c; logits [B, C] -> scalar.

    (The authors' helper averages over classes too, which only rescales the loss by 1/C.)
    """
    return -(F.softmax(teacher / temperature, -1) * F.log_softmax(student / temperature, -1)).sum(-1).mean()


def prediction_loss(student: torch.Tensor, teacher: torch.Tensor, regression: bool) -> torch.Tensor:
    """Prediction-layer KD: soft CE for classification, MSE of the outputs for regression."""
    if regression:
        return F.mse_loss(student, teacher)
    return soft_cross_entropy(student, teacher)


def intermediate_loss(s_int: dict, t_int: dict, teacher_heads: list[list[int]] | None) -> torch.Tensor:
    """Stage-1 loss: sum over layers of MSE(attention scores) + sum over L+1 hidden states of MSE.

    Masked score entries (<= -1e2) are zeroed on both sides (TinyBERT). ``teacher_heads[l]`` lists which
    teacher heads the student's heads of layer l correspond to (pruned students); None = same heads.
    """
    loss = torch.zeros(())
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
    if sample_weights is None:
        return per.mean()
    return (per * sample_weights).sum() / logits.shape[0]
