"""Kaggle "BCI Challenge @ NER 2015" (error-related potentials in a P300 speller; Perrin et al. 2012).

Published form: ``train/Data_S<subject>_Sess<session>.csv`` with columns Time, 56 EEG channels (Fp1 ... O2;
the header spells PO8 as "P08"), EOG and FeedBackEvent (1 at each feedback onset), sampled at 200 Hz; and
``TrainLabels.csv`` with IdFeedBack ("S02_Sess01_FB001") and Prediction (1 = positive feedback, 0 = error).
Epochs: ``epoch_s`` seconds (default 1.25) from each feedback onset, the 56 EEG channels, band-passed
1-40 Hz, resampled to ``sfreq`` (default 128 Hz); features raw (56, T, 1) or folded into frames of
``frame`` samples (56, T / frame, frame). Groups = subjects, so splits are subject-disjoint.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfiltfilt

from ...errors import DataError
from ..edf import resample

__all__ = ["CHANNELS", "read_bci_labels", "read_bci_session"]

CHANNELS = (
    "Fp1 Fp2 AF7 AF3 AF4 AF8 F7 F5 F3 F1 Fz F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCz FC2 FC4 FC6 FT8 T7 C5 C3 C1 Cz C2 C4 "
    "C6 T8 TP7 CP5 CP3 CP1 CPz CP2 CP4 CP6 TP8 P7 P5 P3 P1 Pz P2 P4 P6 P8 PO7 POz PO8 O1 O2"
).split()
SFREQ_IN = 200.0


def read_bci_labels(path: str | Path) -> dict[str, int]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "IdFeedBack" not in rows[0] or "Prediction" not in rows[0]:
        raise DataError(path, "expected columns IdFeedBack,Prediction")
    return {r["IdFeedBack"]: int(float(r["Prediction"])) for r in rows}


def read_bci_session(path: str | Path, labels: dict[str, int], epoch_s: float = 1.25, sfreq: float = 128.0):
    """Epochs of one session. Shapes: x (N, 56, T) float32, y (N,) int64; returns also the subject id."""
    path = Path(path)
    m = re.search(r"Data_(S\d+)_(Sess\d+)", path.name)
    if m is None:
        raise DataError(path, "file name must look like Data_S02_Sess01.csv")
    if not path.is_file():
        raise DataError(path, "file not found")
    with path.open() as fh:
        header = fh.readline().strip().split(",")
    cols = {("PO8" if h.strip() == "P08" else h.strip()): i for i, h in enumerate(header)}
    missing = [c for c in [*CHANNELS, "FeedBackEvent"] if c not in cols]
    if missing:
        raise DataError(path, f"wrong channel set: missing columns {missing}")
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    except ValueError as exc:
        raise DataError(path, f"corrupt CSV ({exc})") from exc
    eeg = data[:, [cols[c] for c in CHANNELS]].T  # (56, T)
    if not np.isfinite(eeg).all():
        raise DataError(path, "NaN/inf in EEG columns")
    onsets = np.flatnonzero(data[:, cols["FeedBackEvent"]] > 0.5)
    sos = butter(4, [1.0, 40.0], btype="band", fs=SFREQ_IN, output="sos")
    eeg = sosfiltfilt(sos, eeg, axis=-1).astype(np.float32)
    n = int(round(epoch_s * SFREQ_IN))
    keys = [f"{m.group(1)}_{m.group(2)}_FB{k + 1:03d}" for k in range(len(onsets))]
    absent = [k for k in keys if k not in labels]
    if absent:
        raise DataError(path, f"{len(absent)} feedback events have no label in TrainLabels.csv (first {absent[0]})")
    ok = onsets + n <= eeg.shape[1]
    ep = np.stack([eeg[:, o : o + n] for o in onsets[ok]])
    ep = resample(ep, SFREQ_IN, sfreq)
    y = np.array([labels[k] for k, good in zip(keys, ok) if good], np.int64)
    return ep.astype(np.float32), y, m.group(1), {"epochs": int(ok.sum()), "truncated_at_end": int((~ok).sum())}
