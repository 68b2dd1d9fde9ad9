"""Per-window feature extraction: short-time log spectra, FFT clip features (TUSZ), sleep spectrograms
(DOD-H) and log band powers (for the baseline)."""

from __future__ import annotations

import numpy as np
from scipy.signal import welch

__all__ = [
    "BANDS",
    "band_powers",
    "frame_signal",
    "fft_clip_features",
    "log_spectrogram",
    "stft_log_power",
]

BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}


def frame_signal(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """Cut the last axis into frames. Shapes: x (..., T) -> (..., n_frames, frame), n_frames = 1 + (T - frame) // hop."""
    T = x.shape[-1]
    if T < frame:
        raise ValueError(f"signal of {T} samples is shorter than one frame ({frame})")
    n = 1 + (T - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    return x[..., idx]


def stft_log_power(x: np.ndarray, nperseg: int, hop: int, bins: slice, eps: float = 1e-6) -> np.ndarray:
    """Short-time log power spectrum with a Hann window.

    Shapes: x (N, V, T) -> (N, V, n_frames, n_bins) float32, bins selected from the nperseg//2+1 rfft bins.
    """
    frames = frame_signal(np.asarray(x, np.float32), nperseg, hop)  # (N, V, L, nperseg)
    frames = frames - frames.mean(axis=-1, keepdims=True)
    spec = np.fft.rfft(frames * np.hanning(nperseg).astype(np.float32), axis=-1)[..., bins]
    return np.log(np.abs(spec) ** 2 + eps).astype(np.float32)


def fft_clip_features(x: np.ndarray, sfreq: float, n_bins: int = 100, eps: float = 1e-8) -> np.ndarray:
    """TUSZ clip features: log magnitude of the first ``n_bins`` FFT bins of each non-overlapping 1-s window.

    Shapes: x (..., V, T) with T a multiple of sfreq -> (..., V, T // sfreq, n_bins) float32.
    """
    step = int(round(sfreq))
    frames = frame_signal(np.asarray(x, np.float32), step, step)
    mag = np.abs(np.fft.fft(frames, axis=-1))[..., :n_bins]
    return np.log(mag + eps).astype(np.float32)


def log_spectrogram(
    x: np.ndarray, n_fft: int = 256, win_length: int = 200, hop: int = 100, eps: float = 1e-8
) -> np.ndarray:
    """DOD-H style spectrogram: centred STFT (reflect padding of n_fft // 2), Hamming window of ``win_length``
    zero-padded to ``n_fft``, log magnitude. A 30-s epoch at 100 Hz gives 31 frames x 129 bins.

    Shapes: x (..., T) -> (..., 1 + T // hop, n_fft // 2 + 1) float32.
    """
    x = np.asarray(x, np.float32)
    pad = n_fft // 2
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    win = np.zeros(n_fft, np.float32)
    off = (n_fft - win_length) // 2
    win[off : off + win_length] = np.hamming(win_length)
    frames = frame_signal(xp, n_fft, hop)
    mag = np.abs(np.fft.rfft(frames * win, axis=-1))
    return np.log(mag + eps).astype(np.float32)


def band_powers(x: np.ndarray, sfreq: float, nperseg: int | None = None) -> np.ndarray:
    """Log band powers (delta, theta, alpha, beta, gamma; Welch PSD summed over each band).

    Shapes: x (N, V, T) -> (N, V, 5) float64.
    """
    nperseg = nperseg or min(x.shape[-1], int(sfreq))
    f, p = welch(np.asarray(x, np.float64), fs=sfreq, nperseg=nperseg, axis=-1)
    out = []
    for lo, hi in BANDS.values():
        m = (f >= lo) & (f < hi)
        if not m.any():
            raise ValueError(f"band {lo}-{hi} Hz has no Welch bin at sfreq={sfreq}, nperseg={nperseg}")
        out.append(np.log(p[..., m].sum(axis=-1) + 1e-12))
    return np.stack(out, axis=-1)
