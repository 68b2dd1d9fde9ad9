"""The baseline every TGMamba run is compared with: logistic regression on per-channel log band powers
(delta 1-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz; Welch PSD) under the same folds."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .data.features import band_powers

__all__ = ["bandpower_features", "fit_bandpower_baseline"]


def bandpower_features(raw: np.ndarray, sfreq: float) -> np.ndarray:
    """Shapes: raw (N, V, T) scaled time-domain windows -> (N, V * 5) log band powers."""
    nperseg = min(raw.shape[-1], max(16, int(sfreq // 2)))
    return band_powers(raw, sfreq, nperseg=nperseg).reshape(raw.shape[0], -1)


def fit_bandpower_baseline(
    train_raw: np.ndarray, train_y: np.ndarray, test_raw: np.ndarray, sfreq: float, C: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Fit standardisation + logistic regression on the training windows, return test class probabilities.

    Shapes: train_raw (N, V, T), train_y (N,), test_raw (M, V, T) -> (M, num_classes) float64.
    """
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    clf.fit(bandpower_features(train_raw, sfreq), train_y)
    probs = clf.predict_proba(bandpower_features(test_raw, sfreq))
    full = np.zeros((probs.shape[0], int(max(train_y.max(), 1)) + 1))
    full[:, clf.classes_] = probs
    return full
