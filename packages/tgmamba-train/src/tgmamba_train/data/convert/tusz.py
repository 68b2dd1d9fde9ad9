"""TUH EEG Seizure Corpus (TUSZ): EDF files with term-based binary annotations -> 10-s clips.

* Annotations: ``<stem>.csv_bi`` (v2: comment lines "#", a header "channel,start_time,stop_time,label,confidence",
  rows like "TERM,0.0,36.8,bckg,1.0") or ``<stem>.tse_bi`` (v1: "start stop label confidence" per line).
  A label other than "bckg" marks seizure.
* 19 channels of the 10-20 system (labels such as "EEG FP1-REF" or "EEG T3-LE" are matched to Fp1 ... T7),
  resampled to 200 Hz, cut into non-overlapping 10-s clips (the remainder is counted, not used); a clip is
  positive if it overlaps any seizure interval.
* Features: "fft" = log magnitude of the first 100 FFT bins of each 1-s window -> (19, 10, 100); "raw" -> (19, 2000, 1).
* Patients: the file name's first token (``aaaaaajy_s001_t000.edf`` -> ``aaaaaajy``). Splits: the corpus's own
  train / dev / eval folders when present (they are patient-disjoint), else a seeded split by patient.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ..edf import read_edf_channels
from ..features import fft_clip_features

__all__ = ["CHANNELS", "clip_labels", "read_term_annotations", "read_tusz_file", "tusz_patient", "tusz_split"]

CHANNELS = [
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "T7",
    "C3",
    "Cz",
    "C4",
    "T8",
    "P7",
    "P3",
    "Pz",
    "P4",
    "P8",
    "O1",
    "O2",
]
SFREQ = 200.0
CLIP_S = 10


def read_term_annotations(path: str | Path) -> list[tuple[float, float, str]]:
    """(start s, stop s, label) rows of a .csv_bi or .tse_bi file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "annotation file not found")
    rows = []
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("version") or line.startswith("channel,"):
            continue
        parts = line.split(",") if path.suffix == ".csv_bi" or "," in line else line.split()
        try:
            if len(parts) >= 5:  # channel,start,stop,label,confidence
                rows.append((float(parts[1]), float(parts[2]), parts[3].strip()))
            elif len(parts) >= 3:  # start stop label [confidence]
                rows.append((float(parts[0]), float(parts[1]), parts[2].strip()))
            else:
                raise ValueError("too few fields")
        except ValueError as exc:
            raise DataError(path, f"line {lineno}: malformed annotation {raw!r} ({exc})") from exc
    return rows


def clip_labels(n_clips: int, annotations: list[tuple[float, float, str]], clip_s: float = CLIP_S) -> np.ndarray:
    """1 for clips overlapping a non-"bckg" interval. Shapes: returns (n_clips,) int64."""
    y = np.zeros(n_clips, np.int64)
    for start, stop, label in annotations:
        if label.lower() == "bckg":
            continue
        first, last = int(start // clip_s), int(np.ceil(stop / clip_s))
        y[max(0, first) : min(n_clips, last)] = 1
    return y


def tusz_patient(path: Path) -> str:
    return path.stem.split("_")[0]


def tusz_split(path: Path) -> str | None:
    parts = {p.lower() for p in path.parts}
    for name, split in (("train", "train"), ("dev", "val"), ("eval", "test")):
        if name in parts:
            return split
    return None


def read_tusz_file(path: str | Path, feature: str = "fft") -> tuple[np.ndarray, np.ndarray, dict]:
    """Clips of one EDF file. Shapes: x (N, 19, 10, 100) for fft or (N, 19, 2000, 1) for raw; y (N,)."""
    path = Path(path)
    ann = None
    for suffix in (".csv_bi", ".tse_bi"):
        if path.with_suffix(suffix).is_file():
            ann = read_term_annotations(path.with_suffix(suffix))
            break
    if ann is None:
        raise DataError(path, "no annotation file next to it (expected .csv_bi or .tse_bi with the same name)")
    rec = read_edf_channels(path, CHANNELS, target_sfreq=SFREQ, match="electrode")
    per = int(CLIP_S * SFREQ)
    n = rec.data.shape[1] // per
    counts = {"clips": n, "remainder_seconds": (rec.data.shape[1] - n * per) / SFREQ}
    if n == 0:
        return np.empty((0, 19, 10, 100), np.float32), np.empty(0, np.int64), counts
    clips = rec.data[:, : n * per].reshape(19, n, per).transpose(1, 0, 2)  # (n, 19, 2000)
    if feature == "fft":
        x = fft_clip_features(clips, SFREQ, n_bins=100)
    elif feature == "raw":
        x = clips[..., None]
    else:
        raise ValueError(f"feature must be 'fft' or 'raw', got {feature!r}")
    y = clip_labels(n, ann)
    counts["seizure_clips"] = int(y.sum())
    return x.astype(np.float32), y, counts
