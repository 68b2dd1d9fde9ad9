"""Sleep-EDF (PhysioNet Sleep-EDF Expanded) PSG + hypnogram EDF pairs -> 30-s epochs with 5 sleep stages.

A DOD-H-like pipeline on public data: channel selection, resampling to 100 Hz, 30-s epoching, hypnogram
annotations -> labels (W, N1, N2, N3 = stages 3 + 4, REM), log spectrograms (C, 31, 129). Epochs scored
"?" or "Movement time", and hypnogram epochs past the end of the PSG, are excluded and counted.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..edf import read_annotations, read_edf_channels
from ..features import log_spectrogram

__all__ = ["CHANNELS", "POSITIONS", "STAGES", "epochs_from_hypnogram", "read_sleep_edf_pair"]

CHANNELS = ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"]
POSITIONS = {"EEG Fpz-Cz": "Fpz-Cz", "EEG Pz-Oz": "Pz-Oz", "EOG horizontal": "E1-E2"}
STAGES = ["W", "N1", "N2", "N3", "REM"]
_MAP = {"W": 0, "1": 1, "2": 2, "3": 3, "4": 3, "R": 4}
EPOCH_S = 30.0
SFREQ = 100.0


def epochs_from_hypnogram(annotations, n_epochs_available: int, path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(epoch indices, labels, counts) from "Sleep stage X" annotations covering whole 30-s epochs."""
    idx, lab = [], []
    counts = {"unscored_or_movement": 0, "beyond_recording": 0, "other_annotations": 0}
    for onset, dur, text in annotations:
        m = re.fullmatch(r"Sleep stage (\S+)", text.strip())
        n = int(round(dur / EPOCH_S))
        if m is None:
            counts["other_annotations" if not text.startswith("Movement") else "unscored_or_movement"] += max(n, 1)
            continue
        if abs(onset / EPOCH_S - round(onset / EPOCH_S)) > 1e-6 or abs(dur / EPOCH_S - n) > 1e-6:
            raise DataError(path, f"annotation {text!r} at {onset} s (duration {dur} s) is not aligned to 30-s epochs")
        stage = m.group(1)
        first = int(round(onset / EPOCH_S))
        for e in range(first, first + n):
            if stage not in _MAP:
                counts["unscored_or_movement"] += 1
            elif e >= n_epochs_available:
                counts["beyond_recording"] += 1
            else:
                idx.append(e)
                lab.append(_MAP[stage])
    return np.asarray(idx, np.int64), np.asarray(lab, np.int64), counts


def read_sleep_edf_pair(psg: str | Path, hypnogram: str | Path, channels: list[str] | None = None):
    """Features and labels of one PSG/hypnogram pair.

    Shapes: returns x (N, C, 31, 129) float32, y (N,) int64, and a counts dict.
    """
    channels = channels or CHANNELS
    rec = read_edf_channels(psg, channels, target_sfreq=SFREQ, match="label")
    per = int(EPOCH_S * SFREQ)
    n_avail = rec.data.shape[1] // per
    if n_avail == 0:
        raise DataError(psg, f"recording shorter than one 30-s epoch ({rec.data.shape[1] / SFREQ:.1f} s)")
    idx, y, counts = epochs_from_hypnogram(read_annotations(hypnogram), n_avail, Path(hypnogram))
    if len(idx) == 0:
        raise DataError(hypnogram, "no scored 30-s epoch overlaps the PSG recording")
    epochs = rec.data[:, : n_avail * per].reshape(len(channels), n_avail, per).transpose(1, 0, 2)[idx]
    x = log_spectrogram(epochs)  # (N, C, 31, 129)
    counts.update(epochs=int(len(idx)), class_counts=np.bincount(y, minlength=5).tolist())
    return x, y, counts
