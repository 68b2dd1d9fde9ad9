"""Matplotlib plots written as PNG files (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

__all__ = ["plot_confusion", "plot_roc", "plot_training_curves"]


def plot_roc(curves: dict[str, list[tuple[np.ndarray, np.ndarray]]], path: str | Path, title: str = "ROC") -> Path:
    """ROC curves. ``curves`` maps a model name to a list of (y_true (N,), score (N,)) pairs, one per fold;
    each fold is drawn thin and the pooled curve thick, with per-fold mean AUROC in the legend."""
    from sklearn.metrics import roc_auc_score

    fig, ax = plt.subplots(figsize=(5, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, folds) in enumerate(curves.items()):
        c = colors[i % len(colors)]
        aucs = []
        for y, s in folds:
            if len(np.unique(y)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, color=c, alpha=0.3, lw=0.8)
            aucs.append(roc_auc_score(y, s))
        y_all = np.concatenate([f[0] for f in folds])
        s_all = np.concatenate([f[1] for f in folds])
        if len(np.unique(y_all)) == 2:
            fpr, tpr, _ = roc_curve(y_all, s_all)
            label = f"{name} (fold AUROC {np.mean(aucs):.3f} ± {np.std(aucs, ddof=1) if len(aucs) > 1 else 0:.3f})"
            ax.plot(fpr, tpr, color=c, lw=2, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_confusion(cm: np.ndarray, class_names: list[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """Confusion matrix (rows: true class, columns: predicted), counts and row-normalised colours."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2.5, 1.2 * len(class_names) + 2))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{norm[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_training_curves(histories: list[list[dict]], path: str | Path, title: str = "Training curves") -> Path:
    """Train/validation loss (left) and validation AUROC or accuracy (right) per epoch, one line per fold.

    ``histories``: per fold, a list of per-epoch dicts with keys epoch, train_loss, val_loss, val_auroc/val_acc.
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, hist in enumerate(histories):
        if not hist:
            continue
        c = colors[k % len(colors)]
        ep = [h["epoch"] for h in hist]
        a1.plot(ep, [h.get("train_loss", np.nan) for h in hist], color=c, label=f"fold {k} train")
        a1.plot(ep, [h.get("val_loss", np.nan) for h in hist], color=c, ls="--", label=f"fold {k} val")
        key = "val_auroc" if any("val_auroc" in h for h in hist) else "val_acc"
        # NaN (null once written as JSON): no AUROC for a single-class validation set
        a2.plot(ep, [np.nan if h.get(key) is None else h[key] for h in hist], color=c, label=f"fold {k}")
        a2.set_ylabel(key)
    a1.set(xlabel="epoch", ylabel="cross-entropy", title="loss (solid: train, dashed: val)")
    a2.set(xlabel="epoch", title="validation metric")
    a1.legend(fontsize=7, ncol=2)
    a2.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
