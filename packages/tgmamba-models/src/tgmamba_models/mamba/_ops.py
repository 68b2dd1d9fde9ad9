"""Kernel selection shared by the mixers: the dispatching ops (fast on CUDA) or the pure-PyTorch references.

``ssm_kernels``' public functions pick a fast backend for CUDA tensors and fall back to their references
elsewhere. A mixer built with ``use_fast_path=False`` calls the ``*_ref`` functions directly instead,
which makes it an oracle for the fast path on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Ops", "get_ops", "inv_softplus", "init_dt_bias_", "init_ssd_head_params"]


@dataclass(frozen=True)
class Ops:
    """The kernel set one forward uses (all with ``mamba_ssm``/``causal_conv1d`` semantics)."""

    causal_conv1d: Any
    causal_conv1d_update: Any
    selective_scan: Any
    chunk_scan: Any
    state_update: Any
    fast: bool


def get_ops(fast: bool) -> Ops:
    """Return the dispatching ops (``fast=True``) or the references (``fast=False``)."""
    import ssm_kernels as sk

    if fast:
        return Ops(
            causal_conv1d=sk.causal_conv1d_fn,
            causal_conv1d_update=sk.causal_conv1d_update,
            selective_scan=sk.selective_scan_fn,
            chunk_scan=sk.mamba_chunk_scan_combined,
            state_update=sk.selective_state_update,
            fast=True,
        )
    return Ops(
        causal_conv1d=sk.causal_conv1d_ref,
        causal_conv1d_update=sk.causal_conv1d_update_ref,
        selective_scan=sk.selective_scan_ref,
        chunk_scan=sk.ssd_chunk_scan_ref,
        state_update=sk.selective_state_update_ref,
        fast=False,
    )


def inv_softplus(x: torch.Tensor) -> torch.Tensor:
    """Inverse of softplus: ``y`` with ``softplus(y) == x`` (for x > 0), stable for small x."""
    return x + torch.log(-torch.expm1(-x))


@torch.no_grad()
def init_dt_bias_(bias: torch.Tensor, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
    """Fill ``bias`` so that ``softplus(bias)`` is log-uniform in ``[dt_min, dt_max]`` (floored).

    This is the S4/Mamba "targeted range" initialisation of the step size Delta.
    """
    if not (0 < dt_min <= dt_max):
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(bias.shape, device=bias.device, dtype=torch.float32)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
    bias.copy_(inv_softplus(dt).to(bias.dtype))


def init_ssd_head_params(
    module: torch.nn.Module,
    nheads: int,
    d_D: int,
    A_init_range: tuple[float, float],
    dt_min: float,
    dt_max: float,
    dt_init_floor: float,
    device: torch.device | str | None,
) -> None:
    """The per-head SSD parameters of Mamba-2 blocks, fp32 and excluded from weight decay.

    ``dt_bias`` (nheads,): softplus(dt_bias) log-uniform in [dt_min, dt_max] (see :func:`init_dt_bias_`);
    ``A_log`` (nheads,): A = -exp(A_log) with -A uniform in ``A_init_range`` (one scalar decay per head);
    ``D`` (d_D,): ones (the skip connection, per head or per channel).
    """
    module.dt_bias = torch.nn.Parameter(torch.empty(nheads, device=device, dtype=torch.float32))
    init_dt_bias_(module.dt_bias, dt_min, dt_max, dt_init_floor)
    A = torch.empty(nheads, device=device, dtype=torch.float32).uniform_(*A_init_range)
    module.A_log = torch.nn.Parameter(torch.log(A))
    module.D = torch.nn.Parameter(torch.ones(d_D, device=device, dtype=torch.float32))
    for p in (module.dt_bias, module.A_log, module.D):
        p._no_weight_decay = True


def check_hidden(name: str, x: torch.Tensor, d_model: int) -> None:
    """Check a (batch, L, d_model) floating input, naming the argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{name} must have shape (batch, seqlen, {d_model}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")


def states_from_cache(
    module: Any, inference_params: Any, batch_size: int, initialize_states: bool = False, input_name: str = "input"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(conv_state, ssm_state) of ``module``'s layer in ``inference_params``, allocated on first use.

    Raises if the module has no ``layer_idx`` or the cached batch differs from ``batch_size``.
    """
    name = type(module).__name__
    if module.layer_idx is None:
        raise ValueError(f"{name}: layer_idx must be set to use an inference cache")
    cache = inference_params.key_value_memory_dict
    if module.layer_idx not in cache:
        cache[module.layer_idx] = module.allocate_inference_cache(batch_size, inference_params.max_seqlen)
    conv_state, ssm_state = cache[module.layer_idx]
    if conv_state.shape[0] != batch_size:
        raise ValueError(
            f"{name}: inference cache of layer {module.layer_idx} holds batch {conv_state.shape[0]}, "
            f"{input_name} has batch {batch_size}"
        )
    if initialize_states:
        conv_state.zero_()
        ssm_state.zero_()
    return conv_state, ssm_state
