"""Dreem Open Dataset-Healthy (DOD-H): one HDF5 file per record -> 30-s epoch spectrograms (16, 31, 129).

Record layout (as published by Dreem, github.com/Dreem-Organization/dreem-learning-open): signals under the
groups ``signals/eeg``, ``signals/eog``, ``signals/emg`` (and ``signals/ecg`` if present), one 1-D dataset per
channel at 250 Hz (a dataset attribute ``fs`` overrides), and ``hypnogram``, one integer per 30-s epoch:
-1 not scored (excluded, counted), 0 W, 1 N1, 2 N2, 3 N3, 4 REM.
Channels are taken in sorted order inside each group (eeg, eog, emg, ecg); every record must have the same set.
Each channel is resampled to 100 Hz and turned into a log spectrogram (centred STFT, n_fft 256, 2-s Hamming
window, 1-s hop) -> 31 frames x 129 bins per 30-s epoch. Reading needs ``h5py`` (pip install h5py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ..edf import resample
from ..features import log_spectrogram

__all__ = ["STAGES", "read_dodh_record"]

STAGES = ["W", "N1", "N2", "N3", "REM"]
GROUPS = ("signals/eeg", "signals/eog", "signals/emg", "signals/ecg")
SFREQ = 100.0


def read_dodh_record(path: str | Path, default_fs: float = 250.0, expect_channels: list[str] | None = None):
    """Features of one DOD-H record. Shapes: x (N, C, 31, 129) float32, y (N,) int64; plus channels, counts."""
    try:
        import h5py
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("reading DOD-H .h5 records needs h5py: pip install h5py") from exc
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(path, f"corrupt or unreadable HDF5 file ({exc})") from exc
    with f:
        if "hypnogram" not in f:
            raise DataError(path, "no 'hypnogram' dataset")
        hyp = np.asarray(f["hypnogram"][()], np.int64).ravel()
        names, sigs = [], []
        for g in GROUPS:
            if g not in f:
                continue
            for ch in sorted(f[g].keys()):
                ds = f[g][ch]
                fs = float(ds.attrs.get("fs", default_fs))
                x = np.asarray(ds[()], np.float32).ravel()
                if not np.isfinite(x).all():
                    raise DataError(path, f"channel {g}/{ch} has NaN/inf samples")
                names.append(ch)
                sigs.append(resample(x, fs, SFREQ))
    if not names:
        raise DataError(path, f"no signals under {GROUPS}")
    if expect_channels is not None and names != expect_channels:
        raise DataError(path, f"wrong channel set: expected {expect_channels}, found {names}")
    per = int(30 * SFREQ)
    T = min(len(s) for s in sigs)
    n = min(T // per, len(hyp))
    data = np.stack([s[: n * per] for s in sigs]).reshape(len(names), n, per).transpose(1, 0, 2)
    hyp = hyp[:n]
    keep = (hyp >= 0) & (hyp <= 4)
    bad = np.setdiff1d(np.unique(hyp[~keep]), [-1])
    if bad.size:
        raise DataError(path, f"hypnogram has unknown stage codes {bad.tolist()} (expected -1..4)")
    x = log_spectrogram(data[keep])
    counts = {
        "epochs": int(keep.sum()),
        "not_scored": int((~keep).sum()),
        "class_counts": np.bincount(hyp[keep], minlength=5).tolist(),
    }
    return x, hyp[keep], names, counts
