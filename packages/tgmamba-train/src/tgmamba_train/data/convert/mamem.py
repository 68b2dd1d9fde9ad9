"""MAMEM SSVEP trials (Nikolopoulos et al., MAMEM EEG SSVEP datasets) -> 8 occipital channels.

Two inputs are accepted:
* ``.mat`` files holding epoched trials: an array ``data_key`` (default "data") shaped (trials, channels, samples)
  or (channels, samples, trials), a label vector ``labels_key`` (default "labels"), and the sampling rate given
  with ``--sfreq`` (MAMEM-SSVEP-II is 250 Hz). Labels are mapped to 0..K-1 in sorted order.
* EDF+ files whose annotations name the stimulus class (text) at each trial onset; trials of ``epoch_s`` seconds.
The 8 channels default to the occipital/parieto-occipital sites PO7 PO3 POz PO4 PO8 O1 Oz O2 (used for the
graph); pass ``channels`` to choose others. Groups = subject (file name up to the first "_" or "."), so splits
are subject-disjoint. The layout of the .mat files is configurable because the published releases differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ..edf import read_annotations, read_edf_channels

__all__ = ["CHANNELS", "read_mamem_edf", "read_mamem_mat"]

CHANNELS = ["PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2"]


def read_mamem_mat(path: str | Path, data_key: str = "data", labels_key: str = "labels", n_channels: int = 8):
    """Shapes: returns x (N, C, T) float32, raw labels (N,)."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        mat = loadmat(path)
    except Exception as exc:
        raise DataError(path, f"corrupt or unreadable .mat file ({type(exc).__name__}: {exc})") from exc
    for k in (data_key, labels_key):
        if k not in mat:
            raise DataError(path, f"no variable {k!r} (variables: {sorted(k for k in mat if not k.startswith('__'))})")
    x = np.asarray(mat[data_key], np.float32)
    y = np.asarray(mat[labels_key]).ravel()
    if x.ndim != 3:
        raise DataError(path, f"{data_key!r} must be 3-D (trials, channels, samples), got {x.shape}")
    if x.shape[0] != len(y) and x.shape[2] == len(y):
        x = x.transpose(2, 0, 1)
    if x.shape[0] != len(y):
        raise DataError(path, f"{len(y)} labels for data of shape {x.shape}")
    if x.shape[1] != n_channels:
        raise DataError(path, f"wrong channel set: expected {n_channels} channels, found {x.shape[1]}")
    if not np.isfinite(x).all():
        raise DataError(path, "NaN/inf in the trials")
    return x, y


def read_mamem_edf(
    path: str | Path, channels: list[str] | None = None, epoch_s: float = 3.0, sfreq: float | None = None
):
    """Shapes: returns x (N, C, T) float32, raw labels (N,) (annotation texts), sampling rate."""
    channels = channels or CHANNELS
    rec = read_edf_channels(path, channels, target_sfreq=sfreq, match="electrode")
    n = int(round(epoch_s * rec.sfreq))
    xs, ys = [], []
    for onset, _dur, text in read_annotations(path):
        s = int(round(onset * rec.sfreq))
        if text.strip() and s + n <= rec.data.shape[1]:
            xs.append(rec.data[:, s : s + n])
            ys.append(text.strip())
    if not xs:
        raise DataError(path, "no annotated trial fits inside the recording")
    return np.stack(xs), np.asarray(ys), rec.sfreq
