"""AdaBoost bookkeeping for BEBERT (pure numpy, so it is checked against hand-worked cases).

Two variants, chosen by ``BoostConfig.variant``:
- 'samme' (our default): multi-class SAMME. e = sum(w * miss) / sum(w); alpha = ln((1 - e) / e) + ln(K - 1);
  w <- w * exp(alpha * miss), renormalised to sum 1; sample weights enter the loss; the ensemble predicts
  argmax of sum_i alpha_i * softmax(logits_i) / sum_i alpha_i.
- 'paper' (the official BEBERT code): alpha = 0.5 ln((1 - e) / e) for every K; w <- w * exp(alpha * s) with
  s = +1 wrong / -1 right, not renormalised; sample weights enter by resampling; hard alpha-weighted vote.
  (The official code's misaligned training predictions, from a shuffled loader, are not reproduced.)
"""
from __future__ import annotations

import math

import numpy as np

EPS = 1e-10


def weighted_error(weights: np.ndarray, miss: np.ndarray) -> float:
    """Weighted error sum(w * miss) / sum(w); weights float [n] >= 0, miss bool [n]."""
    w = np.asarray(weights, np.float64)
    return float(np.sum(w * np.asarray(miss, np.float64)) / np.sum(w))


def member_alpha(error: float, num_classes: int, variant: str) -> float:
    """Vote weight of a member with weighted ``error`` (clamped to [1e-10, 1-1e-10])."""
    e = min(max(error, EPS), 1 - EPS)
    if variant == "samme":
        return math.log((1 - e) / e) + math.log(max(num_classes - 1, 1))
    if variant == "paper":
        return 0.5 * math.log((1 - e) / e)
    raise ValueError(f"unknown boosting variant {variant!r}; expected 'samme' or 'paper'")


def update_weights(weights: np.ndarray, miss: np.ndarray, alpha: float, variant: str) -> np.ndarray:
    """Next round's sample weights, float64 [n] (see module docstring for each variant's rule)."""
    w = np.asarray(weights, np.float64)
    m = np.asarray(miss, bool)
    if variant == "samme":
        w = w * np.exp(alpha * m)
        return w / w.sum()
    if variant == "paper":
        return w * np.exp(np.where(m, alpha, -alpha))
    raise ValueError(f"unknown boosting variant {variant!r}; expected 'samme' or 'paper'")


def combine(member_probs: np.ndarray, alphas: np.ndarray, vote: str = "soft") -> np.ndarray:
    """Ensemble class scores [n, K] from member probabilities [m, n, K] and alphas [m].

    soft: sum_i alpha_i * p_i / sum_i alpha_i (a probability distribution per row).
    hard: sum_i alpha_i * onehot(argmax p_i) / sum_i alpha_i (the official code's weighted vote).
    """
    p = np.asarray(member_probs, np.float64)
    a = np.asarray(alphas, np.float64)
    if vote == "hard":
        p = np.eye(p.shape[-1])[p.argmax(-1)]
    elif vote != "soft":
        raise ValueError(f"unknown vote {vote!r}; expected 'soft' or 'hard'")
    return np.tensordot(a, p, axes=1) / a.sum()
