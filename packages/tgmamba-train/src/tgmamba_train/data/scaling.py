"""Scalers fitted on training data only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureStandardizer", "RobustScaler"]


@dataclass
class RobustScaler:
    """Per-channel robust scaling: (x - median) / IQR, then clipping to [-clip, clip].

    Survives huge artifact samples (the EEG Eye State recording has values 70x the normal range): the
    median and IQR ignore them and the clip bounds them, so no NaN or inf can arise. A channel with zero
    IQR is scaled by 1.
    """

    median: np.ndarray
    iqr: np.ndarray
    clip: float = 10.0

    @classmethod
    def fit(cls, x: np.ndarray, clip: float = 10.0) -> RobustScaler:
        """Fit on samples (T, C) (time along axis 0). Shapes: x (T, C)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"RobustScaler.fit needs x of shape (T >= 2, C), got {x.shape}")
        med = np.median(x, axis=0)
        q75, q25 = np.percentile(x, [75, 25], axis=0)
        iqr = q75 - q25
        iqr = np.where(iqr > 0, iqr, 1.0)
        return cls(med.astype(np.float32), iqr.astype(np.float32), float(clip))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scale samples; channels along the last axis. Shapes: x (..., C) -> (..., C) float32."""
        y = (np.asarray(x, dtype=np.float32) - self.median) / self.iqr
        return np.clip(y, -self.clip, self.clip).astype(np.float32)

    def to_dict(self) -> dict:
        return {"median": self.median.tolist(), "iqr": self.iqr.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict) -> RobustScaler:
        return cls(np.asarray(d["median"], np.float32), np.asarray(d["iqr"], np.float32), float(d["clip"]))


@dataclass
class FeatureStandardizer:
    """Mean/std standardisation per (vertex, feature), pooled over windows and time steps.

    Shapes: fitted on x (N, V, L, F); mean/std are (V, F).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> FeatureStandardizer:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 4:
            raise ValueError(f"FeatureStandardizer.fit needs x of shape (N, V, L, F), got {x.shape}")
        mean = x.mean(axis=(0, 2))
        std = x.std(axis=(0, 2))
        std = np.where(std > 1e-8, std, 1.0)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self.mean[None, :, None, :]) / self.std[None, :, None, :]).astype(
            np.float32
        )

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureStandardizer:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))
