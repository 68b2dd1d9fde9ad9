"""Task metrics computed from predicted class probabilities (binary: AUROC, F1, recall, precision, accuracy;
multiclass, e.g. DOD-H sleep staging: accuracy, macro-F1, Cohen's kappa)."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

__all__ = ["HEADLINE", "compute_metrics", "summarize_folds"]

HEADLINE = {"binary": ["auroc", "accuracy", "f1", "recall"], "multiclass": ["accuracy", "macro_f1", "kappa"]}


def compute_metrics(task: str, probs: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict:
    """Metrics of one split.

    Shapes: probs (N, C) class probabilities; y (N,) int labels in [0, C).
    Binary uses p = probs[:, 1] thresholded at ``threshold``. AUROC is NaN when y holds one class only.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    if probs.ndim != 2 or probs.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (N, C) with N = len(y) = {y.shape[0]}, got {probs.shape}")
    C = probs.shape[1]
    out: dict = {"n": int(y.shape[0])}
    if task == "binary":
        p = probs[:, 1]
        pred = (p >= threshold).astype(np.int64)
        out["auroc"] = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else math.nan
        out["accuracy"] = float(accuracy_score(y, pred))
        out["f1"] = float(f1_score(y, pred, zero_division=0))
        out["recall"] = float(recall_score(y, pred, zero_division=0))
        out["precision"] = float(precision_score(y, pred, zero_division=0))
    elif task == "multiclass":
        pred = probs.argmax(axis=1)
        out["accuracy"] = float(accuracy_score(y, pred))
        out["macro_f1"] = float(f1_score(y, pred, average="macro", labels=list(range(C)), zero_division=0))
        out["kappa"] = float(cohen_kappa_score(y, pred, labels=list(range(C))))
    else:
        raise ValueError(f"task must be 'binary' or 'multiclass', got {task!r}")
    out["confusion_matrix"] = confusion_matrix(y, pred, labels=list(range(C))).tolist()
    return out


def summarize_folds(per_fold: list[dict], keys: list[str]) -> dict:
    """Mean, (sample) standard deviation and per-fold values of each metric across folds (NaNs ignored)."""
    out = {}
    for k in keys:
        vals = np.array([f[k] for f in per_fold], dtype=np.float64)
        ok = vals[~np.isnan(vals)]
        out[k] = {
            "mean": float(ok.mean()) if ok.size else math.nan,
            "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0,
            "per_fold": vals.tolist(),
        }
    return out
