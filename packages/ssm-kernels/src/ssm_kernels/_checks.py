"""Input-contract checks shared by the ops. Every error names the argument and the expected form."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_tensor(
    name: str,
    t: torch.Tensor | None,
    shape: Sequence[int | None] | None = None,
    dtypes: Sequence[torch.dtype] | None = FLOAT_DTYPES,
    device: torch.device | None = None,
    optional: bool = False,
) -> None:
    """Raise a ``ValueError``/``TypeError`` naming ``name`` if ``t`` breaks the contract.

    ``shape`` entries of ``None`` accept any size in that dimension.
    """
    if t is None:
        if optional:
            return
        raise ValueError(f"{name} is required but got None")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if shape is not None:
        dims = t.shape
        ok = len(dims) == len(shape)
        if ok:  # a plain loop: this runs on every op call (a generator costs about as much again)
            for s, d in zip(shape, dims):
                if s is not None and s != d:
                    ok = False
                    break
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(dims)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the other inputs are on {device}")


def check_same_device(**tensors: torch.Tensor | None) -> torch.device:
    """All non-None tensors on one device; returns it. The error lists each argument's device."""
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {v.device for v in present.values()}
    if len(devices) > 1:
        where = ", ".join(f"{k}: {v.device}" for k, v in present.items())
        raise ValueError(f"all inputs must be on one device, got {where}")
    return next(iter(devices)) if devices else torch.device("cpu")


def check_finite(name: str, t: torch.Tensor | None) -> None:
    """Raise if ``t`` holds NaN or inf (use only where the op cannot handle them)."""
    if t is not None and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
