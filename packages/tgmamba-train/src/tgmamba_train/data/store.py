"""The on-disk dataset format written by ``tgmamba-preprocess`` (no pickles, memory-mappable).

Layout of a dataset folder::

    manifest.json                 # description, see below
    train/x-00000.npy ...         # float32 (n_i, V, L, F) shards
    train/y-00000.npy ...         # int64   (n_i,) labels
    train/groups-00000.npy ...    # int64   (n_i,) index into manifest["groups"] (patient / session / record)
    val/...  test/...

``manifest.json`` fields: ``format`` ("tgmamba-eeg-dataset"), ``version`` (1), ``name``, ``task``
("binary" | "multiclass"), ``num_classes``, ``class_names``, ``channels`` (V names, in vertex order),
``positions`` (V channel labels used for the electrode graph, e.g. "F3-M2"), ``sfreq``, ``feature``
(e.g. "fft", "raw", "spectrogram"), ``sample_shape`` [V, L, F], ``groups`` (names), ``splits``
({split: {"n": int, "shards": [{"x": path, "y": path, "groups": path, "n": int}, ...]}}),
``normalization`` ({"mean": (V, F), "std": (V, F)} fitted on the train split), ``class_counts``
({split: [count per class]}), ``source`` (free-form provenance: files, options) and ``created_by``.
Every .npy is read with ``allow_pickle=False`` and ``mmap_mode="r"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import DataError
from ..graphs import graph_for_channels
from .container import PreparedData, SplitArrays

__all__ = ["FORMAT", "DatasetWriter", "ShardedArray", "load_dataset", "read_manifest"]

FORMAT = "tgmamba-eeg-dataset"
SPLITS = ("train", "val", "test")


class ShardedArray:
    """Read-only concatenation of memory-mapped .npy shards along axis 0 (supports len, shape, [int], [array])."""

    def __init__(self, arrays: list[np.ndarray]):
        if not arrays:
            raise ValueError("ShardedArray needs at least one shard")
        self.arrays = arrays
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])
        self.shape = (int(self.offsets[-1]), *arrays[0].shape[1:])
        self.dtype = arrays[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            i = int(i) + (self.shape[0] if i < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(i)
            s = int(np.searchsorted(self.offsets, i, side="right")) - 1
            return self.arrays[s][i - self.offsets[s]]
        idx = np.arange(self.shape[0])[i]
        return np.stack([self[int(j)] for j in idx]) if len(idx) else np.empty((0, *self.shape[1:]), self.dtype)

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate([np.asarray(a) for a in self.arrays])
        return out if dtype is None else out.astype(dtype)


class DatasetWriter:
    """Streams samples into a dataset folder shard by shard and writes the manifest at :meth:`close`.

    Shapes: ``add(split, x (n, V, L, F), y (n,), group)``; every x must have the same (V, L, F).
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        name: str,
        task: str,
        class_names: list[str],
        channels: list[str],
        positions: list[str] | None,
        sfreq: float,
        feature: str,
        source: dict | None = None,
        shard_size: int = 4096,
    ):
        self.out = Path(out_dir)
        if (self.out / "manifest.json").exists():
            raise FileExistsError(f"{self.out}: a dataset already exists here; choose a new --out folder")
        self.out.mkdir(parents=True, exist_ok=True)
        self.meta = {
            "format": FORMAT,
            "version": 1,
            "name": name,
            "task": task,
            "num_classes": len(class_names),
            "class_names": list(class_names),
            "channels": list(channels),
            "positions": list(positions) if positions is not None else None,
            "sfreq": float(sfreq),
            "feature": feature,
            "source": source or {},
            "created_by": f"tgmamba-preprocess {__version__}",
        }
        self.shard_size = shard_size
        self.groups: dict[str, int] = {}
        self.buf: dict[str, list] = {s: [] for s in SPLITS}
        self.shards: dict[str, list[dict]] = {s: [] for s in SPLITS}
        self.sample_shape: tuple[int, ...] | None = None
        self.sum = self.sumsq = None
        self.count = 0
        self.class_counts = {s: np.zeros(len(class_names), np.int64) for s in SPLITS}

    def add(self, split: str, x: np.ndarray, y: np.ndarray, group: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        x = np.asarray(x, np.float32)
        y = np.asarray(y, np.int64)
        if x.ndim != 4 or len(x) != len(y):
            raise ValueError(f"x must be (n, V, L, F) with n = len(y) = {len(y)}, got {x.shape}")
        if len(x) == 0:
            return
        if not np.isfinite(x).all():
            raise ValueError(f"non-finite features for group {group!r}")
        if y.min() < 0 or y.max() >= self.meta["num_classes"]:
            raise ValueError(f"labels must be in [0, {self.meta['num_classes']}), got {np.unique(y).tolist()}")
        if self.sample_shape is None:
            self.sample_shape = x.shape[1:]
        elif x.shape[1:] != self.sample_shape:
            raise ValueError(f"sample shape {x.shape[1:]} differs from earlier samples {self.sample_shape}")
        gid = self.groups.setdefault(group, len(self.groups))
        self.buf[split].append((x, y, np.full(len(y), gid, np.int64)))
        self.class_counts[split] += np.bincount(y, minlength=self.meta["num_classes"])
        if split == "train":
            xs = x.astype(np.float64)
            s, ss = xs.sum(axis=(0, 2)), (xs**2).sum(axis=(0, 2))
            self.sum = s if self.sum is None else self.sum + s
            self.sumsq = ss if self.sumsq is None else self.sumsq + ss
            self.count += x.shape[0] * x.shape[2]
        if sum(len(b[1]) for b in self.buf[split]) >= self.shard_size:
            self._flush(split)

    def _flush(self, split: str) -> None:
        if not self.buf[split]:
            return
        x = np.concatenate([b[0] for b in self.buf[split]])
        y = np.concatenate([b[1] for b in self.buf[split]])
        g = np.concatenate([b[2] for b in self.buf[split]])
        k = len(self.shards[split])
        (self.out / split).mkdir(exist_ok=True)
        entry = {"n": int(len(y))}
        for key, arr in (("x", x), ("y", y), ("groups", g)):
            rel = f"{split}/{key}-{k:05d}.npy"
            np.save(self.out / rel, arr, allow_pickle=False)
            entry[key] = rel
        self.shards[split].append(entry)
        self.buf[split] = []

    def close(self) -> dict:
        for s in SPLITS:
            self._flush(s)
        if self.sample_shape is None or not self.shards["train"]:
            raise ValueError("no training samples were written")
        mean = self.sum / max(self.count, 1)
        std = np.sqrt(np.maximum(self.sumsq / max(self.count, 1) - mean**2, 0.0))
        std = np.where(std > 1e-8, std, 1.0)
        self.meta.update(
            sample_shape=list(self.sample_shape),
            groups=list(self.groups),
            splits={s: {"n": int(sum(e["n"] for e in self.shards[s])), "shards": self.shards[s]} for s in SPLITS},
            normalization={"mean": mean.tolist(), "std": std.tolist()},
            class_counts={s: c.tolist() for s, c in self.class_counts.items()},
        )
        (self.out / "manifest.json").write_text(json.dumps(self.meta, indent=1) + "\n")
        return self.meta


def read_manifest(data_dir: str | Path) -> dict:
    """Read and check a dataset folder's manifest.json."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise DataError(path, "file not found (is --data-dir a folder written by tgmamba-preprocess?)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"corrupt manifest ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise DataError(path, f"format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != 1:
        raise DataError(path, f"unsupported format version {meta.get('version')!r} (this package reads 1)")
    for key in ("task", "num_classes", "class_names", "channels", "sample_shape", "splits", "normalization"):
        if key not in meta:
            raise DataError(path, f"manifest lacks the field {key!r}")
    return meta


def _load_npy(root: Path, rel: str, shape_tail: tuple | None, dtype) -> np.ndarray:
    path = root / rel
    if not path.is_file():
        raise DataError(path, "file not found (listed in manifest.json)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise DataError(path, f"corrupt .npy file ({type(exc).__name__}: {exc})") from exc
    if arr.dtype != dtype:
        raise DataError(path, f"dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if shape_tail is not None and tuple(arr.shape[1:]) != tuple(shape_tail):
        raise DataError(path, f"shape {arr.shape}, expected (n, {', '.join(map(str, shape_tail))})")
    return arr


def load_dataset(data_dir: str | Path, graph_top_k: int = 3) -> tuple[PreparedData, dict]:
    """Open a dataset folder (memory-mapped). Returns the data and the manifest.

    Empty val/test splits are errors. Normalisation is not applied here: pass ``manifest["normalization"]``
    to the data module.
    """
    root = Path(data_dir)
    meta = read_manifest(root)
    tail = tuple(meta["sample_shape"])
    splits = {}
    for s in SPLITS:
        shards = meta["splits"].get(s, {}).get("shards", [])
        if not shards:
            raise DataError(root / "manifest.json", f"the {s!r} split is empty")
        xs, ys, gs = [], [], []
        for e in shards:
            x = _load_npy(root, e["x"], tail, np.float32)
            y = _load_npy(root, e["y"], None, np.int64)
            g = _load_npy(root, e["groups"], None, np.int64)
            if not len(x) == len(y) == len(g) == e["n"]:
                raise DataError(root / e["x"], f"shard lengths disagree: x {len(x)}, y {len(y)}, groups {len(g)}")
            xs.append(x)
            ys.append(np.asarray(y))
            gs.append(np.asarray(g))
        y = np.concatenate(ys)
        if y.min() < 0 or y.max() >= meta["num_classes"]:
            raise DataError(root / shards[0]["y"], f"labels outside [0, {meta['num_classes']})")
        splits[s] = SplitArrays(x=ShardedArray(xs), y=y, groups=np.concatenate(gs))
    positions = meta.get("positions") or meta["channels"]
    try:
        edge_index, edge_weight = graph_for_channels(positions, top_k=graph_top_k)
    except KeyError as exc:
        import warnings

        from ..graphs import fully_connected_graph

        warnings.warn(f"{root}: no electrode positions ({exc}); using a fully connected graph", stacklevel=2)
        edge_index, edge_weight = fully_connected_graph(len(meta["channels"]))
    data = PreparedData(
        name=meta["name"],
        task=meta["task"],
        num_classes=meta["num_classes"],
        class_names=meta["class_names"],
        channels=meta["channels"],
        sfreq=meta.get("sfreq", 0.0),
        edge_index=edge_index,
        edge_weight=edge_weight,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        info={"data_dir": str(root), "class_counts": meta.get("class_counts"), "groups": len(meta.get("groups", []))},
    )
    return data, meta
