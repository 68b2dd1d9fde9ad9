"""EDF/EDF+ reading with edfio: channel selection by (normalised) label, resampling, annotation reading,
and errors that name the file and the problem."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from ..errors import DataError
from ..graphs.electrodes import canonical_name

__all__ = ["EdfRecording", "read_annotations", "read_edf_channels", "resample"]


@dataclass
class EdfRecording:
    """Selected channels of one EDF file. Shapes: data (C, T) float32 at ``sfreq``."""

    path: Path
    channels: list[str]
    labels: list[str]
    data: np.ndarray
    sfreq: float
    duration: float


def _open(path: Path):
    import edfio

    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return edfio.read_edf(path)
    except Exception as exc:  # edfio raises ValueError etc. on malformed headers / truncated data
        raise DataError(path, f"corrupt or unreadable EDF file ({type(exc).__name__}: {exc})") from exc


def _norm(label: str) -> str:
    return " ".join(label.upper().replace("EEG ", "").split())


def resample(x: np.ndarray, sfreq: float, target: float) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased). Shapes: (..., T) -> (..., T * target / sfreq)."""
    if abs(sfreq - target) < 1e-9:
        return x
    frac = Fraction(target / sfreq).limit_denominator(1000)
    return resample_poly(x, frac.numerator, frac.denominator, axis=-1).astype(np.float32)


def read_edf_channels(
    path: str | Path,
    channels: list[str],
    target_sfreq: float | None = None,
    match: str = "electrode",
) -> EdfRecording:
    """Read the named channels of an EDF file, in the given order, optionally resampled.

    Args:
        channels: wanted channels. With ``match="electrode"`` a wanted name matches a signal whose label maps
            to the same standard electrode (so "Fp1" matches "EEG FP1-REF" and "T7" matches "EEG T3-LE");
            with ``match="label"`` labels are compared case-insensitively without a leading "EEG ".
        target_sfreq: resample every channel to this rate (required if the channels' rates differ).

    Raises:
        DataError naming the file for: missing/corrupt file, missing channels (listing the available labels),
        duplicate matches, differing sampling rates without ``target_sfreq``, NaN/inf samples.
    """
    path = Path(path)
    edf = _open(path)
    signals = [s for s in edf.signals]
    key = (lambda lab: canonical_name(lab)) if match == "electrode" else _norm
    want = [(canonical_name(c) or c) if match == "electrode" else _norm(c) for c in channels]
    found, missing = [], []
    for w, orig in zip(want, channels):
        hits = [s for s in signals if key(s.label) == w]
        if not hits:
            missing.append(orig)
        elif len(hits) > 1:
            raise DataError(path, f"channel {orig!r} matches several signals: {[s.label for s in hits]}")
        else:
            found.append(hits[0])
    if missing:
        raise DataError(path, f"wrong channel set: missing {missing}; available: {[s.label for s in signals]}")
    rates = {float(s.sampling_frequency) for s in found}
    if target_sfreq is None and len(rates) > 1:
        raise DataError(path, f"selected channels have different sampling rates {sorted(rates)}; give a target rate")
    out = []
    for s in found:
        x = np.asarray(s.data, dtype=np.float64)
        bad = ~np.isfinite(x)
        if bad.any():
            raise DataError(
                path, f"channel {s.label!r} has {int(bad.sum())} NaN/inf samples (first at {int(np.argmax(bad))})"
            )
        fs = float(s.sampling_frequency)
        out.append(resample(x.astype(np.float32), fs, target_sfreq) if target_sfreq else x.astype(np.float32))
    n = min(len(x) for x in out)
    data = np.stack([x[:n] for x in out])
    sf = float(target_sfreq) if target_sfreq else rates.pop()
    return EdfRecording(path, list(channels), [s.label for s in found], data, sf, float(edf.duration))


def read_annotations(path: str | Path) -> list[tuple[float, float, str]]:
    """EDF+ annotations as (onset s, duration s, text) in file order."""
    path = Path(path)
    edf = _open(path)
    return [(float(a.onset), float(a.duration or 0.0), str(a.text)) for a in edf.annotations]
