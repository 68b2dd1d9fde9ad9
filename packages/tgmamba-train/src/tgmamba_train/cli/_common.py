"""Shared CLI helpers: flags accepted with dashes or underscores, friendly error exits."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from ..errors import ConfigMismatchError, DataError

__all__ = ["add_flag", "quiet_libraries", "run_cli"]


def add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, **kwargs) -> None:
    """Register ``--some_flag`` and ``--some-flag`` as the same option."""
    names = {f"--{name}", f"--{name.replace('_', '-')}", f"--{name.replace('-', '_')}"}
    kwargs.setdefault("dest", name.replace("-", "_"))
    parser.add_argument(*sorted(names, key=lambda s: ("_" in s, s)), **kwargs)


def quiet_libraries() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*(negative|positive) samples in targets.*")
    warnings.filterwarnings("ignore", message=".*is deprecated.*", category=DeprecationWarning)


def run_cli(fn, argv=None) -> int:
    """Run ``fn(argv)``; bad input becomes a one-line error on stderr and exit status 2."""
    try:
        return fn(argv) or 0
    except (DataError, ConfigMismatchError, FileExistsError, ValueError, ModuleNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: resume with --resume <run folder> (at most the current epoch is lost)", file=sys.stderr)
        return 130
