"""Input factories and kernel-vs-reference checks for ``selective_state_update``."""

from __future__ import annotations

import torch

from . import assert_close_to_reference, max_rel_err

__all__ = ["check_state_update", "make_state_update_inputs"]


def make_state_update_inputs(
    batch: int,
    nheads: int | None,
    headdim: int,
    dstate: int,
    ngroups: int = 1,
    dtype: torch.dtype = torch.float32,
    state_dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    tie_hdim: bool = False,
    D: bool = True,
    z: bool = True,
    dt_bias: bool = True,
    indices: bool = False,
    seed: int = 0,
) -> dict:
    """Random inputs; ``nheads=None`` gives Mamba-1 shapes (dim = headdim). ``tie_hdim`` broadcasts
    dt, A, D and dt_bias from per-head values with stride 0, as Mamba-2 does."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, dt=dtype):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dt)

    rows = batch + 2 if indices else batch
    idx = torch.randperm(rows, generator=g)[:batch].to(device, torch.int32) if indices else None
    if nheads is None:
        dim = headdim
        return {
            "state": rnd(rows, dim, dstate, dt=state_dtype),
            "x": rnd(batch, dim),
            "dt": rnd(batch, dim, scale=0.5),
            "A": -torch.rand(dim, dstate, generator=g).to(device, torch.float32) - 0.1,
            "B": rnd(batch, dstate),
            "C": rnd(batch, dstate),
            "D": rnd(dim, dt=torch.float32) if D else None,
            "z": rnd(batch, dim) if z else None,
            "dt_bias": rnd(dim, scale=0.5, dt=torch.float32) if dt_bias else None,
            "state_batch_indices": idx,
        }
    h, p, n = nheads, headdim, dstate
    if tie_hdim:
        dt_ = rnd(batch, h, scale=0.5)[..., None].expand(batch, h, p)
        A = (-torch.rand(h, generator=g) - 0.1).to(device, torch.float32)[:, None, None].expand(h, p, n)
        D_ = rnd(h, dt=torch.float32)[:, None].expand(h, p)
        dtb = rnd(h, scale=0.5, dt=torch.float32)[:, None].expand(h, p)
    else:
        dt_ = rnd(batch, h, p, scale=0.5)
        A = (-torch.rand(h, p, n, generator=g) - 0.1).to(device, torch.float32)
        D_ = rnd(h, p, dt=torch.float32)
        dtb = rnd(h, p, scale=0.5, dt=torch.float32)
    return {
        "state": rnd(rows, h, p, n, dt=state_dtype),
        "x": rnd(batch, h, p),
        "dt": dt_,
        "A": A,
        "B": rnd(batch, ngroups, n),
        "C": rnd(batch, ngroups, n),
        "D": D_ if D else None,
        "z": rnd(batch, h, p) if z else None,
        "dt_bias": dtb if dt_bias else None,
        "state_batch_indices": idx,
    }


def check_state_update(inputs: dict, dt_softplus: bool = True, backend: str = "triton") -> dict[str, float]:
    """Run ``selective_state_update`` on ``backend``; compare output and the updated state with the
    float64 reference (yardstick: the reference in the inputs' own dtypes). Returns relative errors."""
    from ..state_update.interface import selective_state_update
    from ..state_update.reference import selective_state_update_ref

    state = inputs["state"]
    fast_in = dict(inputs, state=state.clone())
    lo_in = dict(inputs, state=state.clone())
    hi_in = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in inputs.items()}
    hi_in["state"] = state.double()
    with torch.no_grad():
        out = selective_state_update(**fast_in, dt_softplus=dt_softplus, backend=backend)
        hi = selective_state_update_ref(**hi_in, dt_softplus=dt_softplus)
        lo = selective_state_update_ref(**lo_in, dt_softplus=dt_softplus)
    assert_close_to_reference("out", out, hi, lo)
    assert_close_to_reference("state", fast_in["state"], hi_in["state"], lo_in["state"])
    return {"out": max_rel_err(out, hi), "state": max_rel_err(fast_in["state"], hi_in["state"])}
