"""Task metrics (numpy only, so the runtime side can evaluate without torch or scikit-learn)."""
from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    """Fraction of equal entries; pred, gold int arrays [n]."""
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """Binary F1 of class 1; int arrays [n]."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = float(np.sum((pred == 1) & (gold == 1)))
    fp = float(np.sum((pred == 1) & (gold != 1)))
    fn = float(np.sum((pred != 1) & (gold == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def mcc(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation coefficient for binary labels; int arrays [n]."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = float(np.sum((pred == 1) & (gold == 1)))
    tn = float(np.sum((pred == 0) & (gold == 0)))
    fp = float(np.sum((pred == 1) & (gold == 0)))
    fn = float(np.sum((pred == 0) & (gold == 1)))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if den == 0 else float((tp * tn - fp * fn) / den)


def pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    """Pearson correlation of two float arrays [n]."""
    return float(np.corrcoef(np.asarray(pred, float), np.asarray(gold, float))[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, float)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    # average ranks of ties
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return sums[inv] / counts[inv]


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    """Spearman rank correlation (ties get average ranks) of two float arrays [n]."""
    return pearson(_ranks(pred), _ranks(gold))


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def compute_metrics(names, pred, gold) -> dict[str, float]:
    """{name: value} for each metric name; pred are class ids (classification) or scores (regression)."""
    return {n: METRICS[n](pred, gold) for n in names}
