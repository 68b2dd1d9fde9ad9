"""Run folders: never overwrite finished results, resume unfinished ones, write JSON atomically."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

__all__ = ["FINISHED_MARKER", "is_finished", "new_run_dir", "read_json", "to_jsonable", "write_json"]

FINISHED_MARKER = "metrics.json"


def to_jsonable(obj):
    """Convert numpy scalars/arrays, tuples and NaN (-> null) to plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj) -> Path:
    """Write JSON via a temporary file and an atomic rename (a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / FINISHED_MARKER).is_file()


def default_run_name(prefix: str) -> str:
    return f"{prefix}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def new_run_dir(save_dir: str | Path, run_name: str) -> Path:
    """Create and return a fresh folder ``save_dir/run_name``; if that name is taken, ``run_name-2``, ``-3``, ...

    Existing folders are never reused or overwritten (use ``--resume`` to continue one).
    """
    if not run_name or "/" in run_name or run_name in (".", ".."):
        raise ValueError(f"run name must be a plain folder name, got {run_name!r}")
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    base = run_name
    candidate, k = save_dir / run_name, 2
    while True:
        try:
            candidate.mkdir(parents=False, exist_ok=False)
            return candidate
        except FileExistsError:
            candidate = save_dir / f"{base}-{k}"
            k += 1
