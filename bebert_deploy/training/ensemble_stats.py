"""Statistics for ensemble results from stored member logits (numpy only): soft votes, vote weights fitted on
dev, and the paired McNemar test of an ensemble against one member on the same test sentences."""
from __future__ import annotations

import itertools
import math

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax of [n, K] logits (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def soft_vote(logits: list[np.ndarray], weights=None) -> np.ndarray:
    """sum_i w_i softmax(logits_i) / sum w for member logits [n, K] each -> probabilities [n, K]."""
    w = np.ones(len(logits)) if weights is None else np.asarray(weights, dtype=np.float64)
    return sum(wi * softmax(l) for wi, l in zip(w, logits)) / w.sum()


def fit_vote_weights(dev_logits: list[np.ndarray], dev_gold: np.ndarray, grid: int = 10) -> list[float]:
    """Vote weights (summing to 1, on a 1/grid lattice) that maximise dev accuracy; ties go to the weights
    nearest to equal. Chosen on dev only: the test split is never seen here."""
    m = len(dev_logits)
    probs = [softmax(l) for l in dev_logits]
    best, best_key = None, None
    for c in itertools.product(range(grid + 1), repeat=m - 1):
        if sum(c) > grid:
            continue
        w = np.array([*c, grid - sum(c)], dtype=np.float64) / grid
        acc = float((sum(wi * p for wi, p in zip(w, probs)).argmax(1) == dev_gold).mean())
        key = (acc, -float(np.abs(w - 1.0 / m).sum()))
        if best_key is None or key > best_key:
            best, best_key = w, key
    return [float(x) for x in best]


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact two-sided McNemar test of two classifiers on the same examples (bool [n] each): b = a right and b
    wrong, c = a wrong and b right; p = P(Binomial(b + c, 1/2) as or more extreme). Returns b, c, p."""
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "p": 1.0}
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return {"b": b, "c": c, "p": min(1.0, 2 * tail)}
