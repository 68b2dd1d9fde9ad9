"""The embedded default dataset: UCI "EEG Eye State" (Roesler 2013, CC BY 4.0), one continuous 117-s
Emotiv recording of 14 channels at 128 Hz with a per-sample eyes-open/closed label.

Pipeline (all of it documented in the package README):

1. ``convert_arff`` turns the published ARFF file into the compact package data
   ``tgmamba_train/data/default/eeg_eye_state.npz`` (float32 signals (T, 14), uint8 labels (T,),
   channel names, sampling rate; compressed, no pickles).
2. Blocked folds over time (``splits.blocked_fold``): the recording is cut into K x 2 contiguous blocks and
   fold k tests blocks k and k + K (two contiguous stretches from the first and second half, so every test
   fold holds both eye states); validation = a contiguous stretch after the first test block; train = the
   rest; ``gap`` samples (0.5 s) separate all regions.
3. Robust scaling (median/IQR per channel) fitted on the training region's samples only, then clipping.
4. Windows of ``window`` samples (1 s) every ``stride`` samples, kept only if entirely inside one region.
5. Window labels: with ``label_policy="drop"`` (default) a window that straddles an eyes-open/closed
   transition is dropped, and the number dropped is reported; with "majority" it takes the majority label
   (ties -> closed) and with "center" the label of its centre sample; those are counted too.
6. Features (the model's input; standardised per (channel, feature) on the training windows):
   "bands" (default), (14, 5, 5): for 0.5-s frames every 0.125 s, the log band powers (delta, theta, alpha,
   beta, gamma; Welch) minus their mean over the 14 electrodes (a common-average reference in the log-power
   domain, which removes slow drifts shared by all electrodes and makes the model rely on spatial contrasts,
   e.g. occipital alpha); "bands-abs" the same without the reference; "stft" short-time log power (14, 5, 24),
   bins 2-48 Hz; "raw" scaled samples (14, 128, 1).
7. Electrode identity: a one-hot code of the electrode (default; 14 extra features per step) or its 3-D
   position is appended, so the shared per-vertex weights can respond differently per electrode (with
   referenced features and mean vertex pooling, a model without it cannot weight occipital against frontal
   sites). Default input: (14, 5, 5 + 14).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..graphs import electrode_positions, graph_for_channels
from .arff import read_arff
from .container import PreparedData, SplitArrays
from .features import band_powers, frame_signal, stft_log_power
from .scaling import FeatureStandardizer, RobustScaler
from .splits import assign_windows, blocked_fold

__all__ = [
    "EMOTIV_CHANNELS",
    "EyeStateConfig",
    "Recording",
    "convert_arff",
    "default_npz_path",
    "load_recording",
    "prepare_eye_state",
    "window_labels",
]

EMOTIV_CHANNELS = ["AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4"]
LABEL_COLUMN = "eyeDetection"
SFREQ = 128.0
CLASS_NAMES = ["eyes open", "eyes closed"]


@dataclass
class Recording:
    """A continuous labelled recording. Shapes: signals (T, C) float32; labels (T,) int64."""

    signals: np.ndarray
    labels: np.ndarray
    channels: list[str]
    sfreq: float
    source: str


@dataclass
class EyeStateConfig:
    """Windowing, labelling, scaling and split settings for EEG Eye State."""

    window: int = 128
    stride: int = 32
    label_policy: str = "drop"  # "drop" | "majority" | "center"
    features: str = "bands"  # "bands" | "stft" | "raw"
    clip: float = 10.0
    val_fraction: float = 0.1
    gap: int = 64
    blocks_per_fold: int = 2
    electrode_features: str = "onehot"  # "onehot" | "positions" | "none"
    graph_top_k: int = 3

    def __post_init__(self) -> None:
        if self.label_policy not in ("drop", "majority", "center"):
            raise ValueError(f"label_policy must be 'drop', 'majority' or 'center', got {self.label_policy!r}")
        if self.features not in ("bands", "bands-abs", "bands-both", "stft", "raw"):
            raise ValueError(f"features must be 'bands', 'stft' or 'raw', got {self.features!r}")
        if self.electrode_features not in ("onehot", "positions", "none"):
            raise ValueError(
                f"electrode_features must be 'onehot', 'positions' or 'none', got {self.electrode_features!r}"
            )
        if self.window < 64 or self.stride < 1:
            raise ValueError(f"window must be >= 64 and stride >= 1, got {self.window}, {self.stride}")


def default_npz_path() -> Path:
    """Path of the embedded EEG Eye State recording inside the installed package."""
    return Path(str(resources.files("tgmamba_train.data").joinpath("default", "eeg_eye_state.npz")))


def _validate(signals: np.ndarray, labels: np.ndarray, channels: list[str], path: Path) -> None:
    if signals.ndim != 2 or signals.shape[1] != len(channels):
        raise DataError(path, f"signals must be (T, {len(channels)}), got {signals.shape}")
    if labels.shape != (signals.shape[0],):
        raise DataError(path, f"labels must be ({signals.shape[0]},), got {labels.shape}")
    bad = ~np.isfinite(signals)
    if bad.any():
        t, c = np.argwhere(bad)[0]
        raise DataError(
            path, f"{int(bad.sum())} non-finite values (NaN/inf), first at sample {t}, channel {channels[c]}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise DataError(path, f"labels must be 0/1, found values {np.unique(labels)[:10].tolist()}")
    if signals.shape[0] < 1024:
        raise DataError(path, f"recording too short for blocked evaluation: {signals.shape[0]} samples")


def convert_arff(arff_path: str | Path, out_path: str | Path) -> dict:
    """Convert the UCI ARFF file to the compact npz package data; returns a summary dict.

    Raises DataError if the file is missing or malformed, has a different channel set, NaN, or bad labels.
    """
    arff_path = Path(arff_path)
    names, data = read_arff(arff_path)
    expected = [*EMOTIV_CHANNELS, LABEL_COLUMN]
    if names != expected:
        raise DataError(arff_path, f"wrong channel set: expected attributes {expected}, found {names}")
    signals = data[:, :-1].astype(np.float32)
    labels = data[:, -1]
    if not np.isin(labels, (0, 1)).all():
        raise DataError(arff_path, "eyeDetection column must contain only 0 and 1")
    labels = labels.astype(np.int64)
    _validate(signals, labels, EMOTIV_CHANNELS, arff_path)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_path,
        signals=signals,
        labels=labels.astype(np.uint8),
        channels=np.array(EMOTIV_CHANNELS),
        sfreq=np.array(SFREQ, dtype=np.float64),
    )
    return {
        "samples": int(signals.shape[0]),
        "channels": EMOTIV_CHANNELS,
        "sfreq": SFREQ,
        "closed_fraction": float(labels.mean()),
        "segments": int(1 + np.count_nonzero(np.diff(labels))),
        "output": str(out_path),
        "bytes": out_path.stat().st_size,
    }


def load_recording(path: str | Path | None = None) -> Recording:
    """Load the embedded recording (or an npz written by :func:`convert_arff`, or the original .arff)."""
    path = default_npz_path() if path is None else Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.suffix.lower() == ".arff":
        names, data = read_arff(path)
        if names != [*EMOTIV_CHANNELS, LABEL_COLUMN]:
            raise DataError(path, f"wrong channel set: expected {EMOTIV_CHANNELS} + eyeDetection, found {names}")
        signals, labels = data[:, :-1].astype(np.float32), data[:, -1]
        if not np.isin(labels, (0, 1)).all():
            raise DataError(path, "eyeDetection column must contain only 0 and 1")
        channels, sfreq = list(EMOTIV_CHANNELS), SFREQ
        labels = labels.astype(np.int64)
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                signals = np.asarray(z["signals"], np.float32)
                labels = np.asarray(z["labels"]).astype(np.int64)
                channels = [str(c) for c in z["channels"]]
                sfreq = float(z["sfreq"])
        except KeyError as exc:
            raise DataError(path, f"missing array {exc} (expected signals, labels, channels, sfreq)") from exc
        except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
            raise DataError(path, f"corrupt or unreadable npz file ({type(exc).__name__}: {exc})") from exc
        if channels != EMOTIV_CHANNELS:
            raise DataError(path, f"wrong channel set: expected {EMOTIV_CHANNELS}, found {channels}")
    _validate(signals, labels, channels, path)
    return Recording(signals, labels, channels, sfreq, str(path))


def window_labels(labels: np.ndarray, starts: np.ndarray, window: int, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Label each window and flag windows that straddle a label transition.

    Returns (labels (N,) int64, straddles (N,) bool). ``policy`` decides the label of straddling windows
    ("majority": majority, ties -> 1; "center": centre sample; "drop": majority too, caller drops them).
    """
    idx = starts[:, None] + np.arange(window)[None, :]
    lab = labels[idx]  # (N, window)
    frac = lab.mean(axis=1)
    straddles = (frac > 0) & (frac < 1)
    if policy == "center":
        out = lab[:, window // 2]
    else:
        out = (frac >= 0.5).astype(np.int64)
    return out.astype(np.int64), straddles


def _features(windows: np.ndarray, cfg: EyeStateConfig) -> np.ndarray:
    if cfg.features == "raw":
        return windows[..., None].astype(np.float32)  # (N, V, T, 1)
    if cfg.features in ("bands", "bands-abs", "bands-both"):
        nper = cfg.window // 2
        frames = frame_signal(windows, nper, max(1, nper // 4))  # (N, V, L, nper)
        N, V, Lf, _ = frames.shape
        bp = band_powers(frames.reshape(N, V * Lf, nper), SFREQ, nperseg=nper).reshape(N, V, Lf, -1)
        ref = bp - bp.mean(axis=1, keepdims=True)
        if cfg.features == "bands":
            # spatial (common-average) reference in the log-power domain: removes drifts shared by all electrodes
            return ref.astype(np.float32)  # (N, V, L, 5)
        if cfg.features == "bands-both":
            return np.concatenate([ref, bp], axis=-1).astype(np.float32)  # (N, V, L, 10)
        return bp.astype(np.float32)  # (N, V, L, 5)
    # 0.5-s Hann frames, hop 1/8 s, bins 1..24 (2-48 Hz at 128 Hz and nperseg 64)
    nper = cfg.window // 2
    return stft_log_power(windows, nperseg=nper, hop=max(1, nper // 4), bins=slice(1, 25))


def prepare_eye_state(
    recording: Recording, fold: int, num_folds: int, cfg: EyeStateConfig | None = None
) -> PreparedData:
    """Build the train/val/test arrays of one blocked fold (see the module docstring for each step)."""
    cfg = cfg or EyeStateConfig()
    T = recording.signals.shape[0]
    regions = blocked_fold(
        T, num_folds, fold, val_fraction=cfg.val_fraction, gap=cfg.gap, blocks_per_fold=cfg.blocks_per_fold
    )
    train_mask = np.zeros(T, dtype=bool)
    for s, e in regions.train:
        train_mask[s:e] = True
    scaler = RobustScaler.fit(recording.signals[train_mask], clip=cfg.clip)
    scaled = scaler.transform(recording.signals)  # (T, C)
    starts = np.arange(0, T - cfg.window + 1, cfg.stride)
    labels, straddles = window_labels(recording.labels, starts, cfg.window, cfg.label_policy)
    idx = starts[:, None] + np.arange(cfg.window)[None, :]
    info: dict = {"config": asdict(cfg), "fold": fold, "num_folds": num_folds, "windows_total": int(len(starts))}
    info["regions"] = {"test": regions.test, "val": regions.val, "train": regions.train, "gap": regions.gap}
    info["scaler"] = scaler.to_dict()
    assigned = np.zeros(len(starts), dtype=bool)
    splits: dict[str, SplitArrays] = {}
    raws = {}
    for name in ("train", "val", "test"):
        inside = assign_windows(starts, cfg.window, getattr(regions, name))
        assigned |= inside
        n_straddle = int((inside & straddles).sum())
        keep = inside & ~straddles if cfg.label_policy == "drop" else inside
        info[f"{name}_windows"] = int(keep.sum())
        info[f"{name}_straddling_windows"] = n_straddle
        info[f"{name}_straddling_{'dropped' if cfg.label_policy == 'drop' else 'kept'}"] = n_straddle
        raw = scaled[idx[keep]].transpose(0, 2, 1)  # (N, V, T)
        raws[name] = raw
        splits[name] = SplitArrays(x=_features(raw, cfg), y=labels[keep], groups=starts[keep], raw=raw)
    info["windows_outside_regions"] = int((~assigned).sum())  # across region boundaries or in gaps
    for name in ("train", "test"):
        if len(np.unique(splits[name].y)) < 2:
            raise DataError(recording.source, f"fold {fold}: the {name} split has a single class; use fewer folds")
    std = FeatureStandardizer.fit(splits["train"].x)
    V = len(recording.channels)
    ident = {
        "onehot": np.eye(V, dtype=np.float32),
        "positions": electrode_positions(recording.channels).astype(np.float32),
        "none": np.zeros((V, 0), np.float32),
    }[cfg.electrode_features]  # (V, E)
    for s in splits.values():
        s.x = std.transform(s.x)
        # electrode identity as extra features per step (appended after standardisation, which would zero them)
        e = np.broadcast_to(ident[None, :, None, :], (*s.x.shape[:3], ident.shape[1]))
        s.x = np.concatenate([s.x, e], axis=-1)
    info["feature_standardizer"] = std.to_dict()
    edge_index, edge_weight = graph_for_channels(recording.channels, top_k=cfg.graph_top_k)
    return PreparedData(
        name="eye-state",
        task="binary",
        num_classes=2,
        class_names=list(CLASS_NAMES),
        channels=list(recording.channels),
        sfreq=recording.sfreq,
        edge_index=edge_index,
        edge_weight=edge_weight,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        info=info,
    )
