"""Error types raised by tgmamba_train for bad input files, configurations and runs."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ConfigMismatchError", "DataError"]


class DataError(ValueError):
    """A data file is missing, unreadable, or its content is unusable.

    The message always names the file (when there is one) and the problem.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class ConfigMismatchError(ValueError):
    """A checkpoint's model configuration does not match the data it is asked to evaluate."""
