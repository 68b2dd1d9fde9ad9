"""Shared helpers for the Mamba-family module tests: fast-vs-reference comparison on outputs and gradients."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ssm_kernels.testing import assert_close_to_reference


def clone_as_reference(module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """A deep copy with ``use_fast_path=False`` on every mixer, cast to ``dtype`` (``None``: dtypes kept)."""
    ref = copy.deepcopy(module)
    if dtype is not None:
        ref = ref.to(dtype)
    for m in ref.modules():
        if hasattr(m, "use_fast_path"):
            m.use_fast_path = False
    return ref


def run_with_grads(module: nn.Module, x: torch.Tensor, gy: torch.Tensor, **kwargs):
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    y = module(x, **kwargs)
    (y * gy.to(y.dtype)).sum().backward()
    grads = {"x": x.grad}
    for name, p in module.named_parameters():
        grads[name] = p.grad
    return y.detach(), grads


def assert_fast_matches_reference(module: nn.Module, x: torch.Tensor, **kwargs) -> None:
    """The module (fast path) against its reference path: output and every gradient.

    The tolerance follows STYLE.md: the fast path's error against a float64 reference may be at most
    twice the error of the reference run in the fast path's own dtype (plus a dtype floor).
    """
    dtype = module.in_proj.weight.dtype
    gy = torch.randn(*x.shape[:-1], module.d_model, device=x.device, dtype=torch.float64)
    ref_hi = clone_as_reference(module, torch.float64)
    ref_lo = clone_as_reference(module, None)  # same parameter dtypes as the fast module
    y, g = run_with_grads(module, x.to(dtype), gy, **kwargs)
    y_hi, g_hi = run_with_grads(ref_hi, x.double(), gy, **kwargs)
    y_lo, g_lo = run_with_grads(ref_lo, x.to(dtype), gy, **kwargs)
    assert_close_to_reference("y", y, y_hi, y_lo)
    assert set(g) == set(g_hi)
    for name in g:
        assert g[name] is not None, f"no gradient for {name}"
        assert_close_to_reference(f"grad {name}", g[name], g_hi[name], g_lo[name])
