"""A small, strict reader for numeric ARFF files (Weka's Attribute-Relation File Format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["read_arff"]


def read_arff(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read a numeric (or nominal-with-numeric-codes) ARFF file.

    Returns the attribute names and a float64 array with one row per instance.

    Shapes:
        returns (names: list of A str, data: (N, A) float64)

    Raises:
        DataError naming the file and the line for missing files, malformed headers, rows of the wrong
        length, non-numeric values or missing values ("?").
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    names: list[str] = []
    rows: list[list[float]] = []
    in_data = False
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read as UTF-8 text ({exc})") from exc
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@attribute"):
                parts = line.split(None, 2)
                if len(parts) < 3:
                    raise DataError(path, f"line {lineno}: malformed @attribute line {raw!r}")
                names.append(parts[1].strip("'\""))
            elif low.startswith("@data"):
                in_data = True
            continue
        values = line.split(",")
        if len(values) != len(names):
            raise DataError(path, f"line {lineno}: expected {len(names)} values, found {len(values)}")
        try:
            rows.append([float(v) for v in values])
        except ValueError as exc:
            raise DataError(path, f"line {lineno}: non-numeric or missing value ({exc})") from exc
    if not in_data:
        raise DataError(path, "no @data section: not an ARFF file")
    if not rows:
        raise DataError(path, "the @data section is empty")
    return names, np.asarray(rows, dtype=np.float64)
