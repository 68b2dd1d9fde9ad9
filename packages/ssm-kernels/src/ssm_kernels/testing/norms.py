"""Input factories and kernel-vs-reference checks for the fused norms (outputs and every gradient)."""

from __future__ import annotations

import torch

from . import assert_close_to_reference, max_rel_err

__all__ = ["check_layer_norm", "check_rms_norm_gated"]


def _grads(out_list, grad_list, leaves):
    loss = sum((o.double() * g.double()).sum() for o, g in zip(out_list, grad_list))
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    return {f"d{n}": g for n, g in zip(names, grads)}


def _compare(fast, hi, lo):
    errs = {}
    for name, value in fast.items():
        assert value.dtype == lo[name].dtype, f"{name}: dtype {value.dtype} != reference {lo[name].dtype}"
        assert_close_to_reference(name, value, hi[name], lo[name])
        errs[name] = max_rel_err(value, hi[name])
    return errs


def check_layer_norm(
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    is_rms_norm: bool = True,
    bias: bool = True,
    residual: bool = False,
    residual_dtype: torch.dtype | None = None,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    eps: float = 1e-5,
    backend: str = "triton",
    seed: int = 0,
) -> dict[str, float]:
    """Compare ``layer_norm_fn`` on ``backend`` with the reference on out, residual_out and all grads."""
    from ..norms.interface import layer_norm_fn
    from ..norms.reference import layer_norm_ref, rms_norm_ref

    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    base = {
        "x": torch.randn(*shape, generator=g).to(device, dtype),
        "weight": (1 + 0.3 * torch.randn(n, generator=g)).to(device, dtype),
        "bias": (0.3 * torch.randn(n, generator=g)).to(device, dtype) if bias else None,
        "residual": torch.randn(*shape, generator=g).to(device, residual_dtype or dtype) if residual else None,
    }
    grad_out = torch.randn(*shape, generator=g).to(device, dtype)  # representable in every precision
    grad_res = torch.randn(*shape, generator=g).to(device, dtype)
    ref = rms_norm_ref if is_rms_norm else layer_norm_ref

    def run(fn, inputs, **kw):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None}
        res = fn(
            leaves["x"], leaves["weight"], leaves.get("bias"), leaves.get("residual"), eps=eps, prenorm=prenorm,
            residual_in_fp32=residual_in_fp32, **kw,
        )  # fmt: skip
        outs = list(res) if prenorm else [res]
        result = {"out": outs[0].detach()}
        if prenorm:
            result["residual_out"] = outs[1].detach()
        result.update(_grads(outs, [grad_out, grad_res][: len(outs)], leaves))
        return result

    fast = run(layer_norm_fn, base, is_rms_norm=is_rms_norm, backend=backend)
    hi_in = {k: (v.double() if v is not None else None) for k, v in base.items()}
    hi = run(ref, hi_in)
    lo = run(ref, base, upcast=False)
    return _compare(fast, hi, lo)


def check_rms_norm_gated(
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    z: bool = True,
    bias: bool = False,
    group_size: int | None = None,
    norm_before_gate: bool = True,
    eps: float = 1e-5,
    backend: str = "triton",
    seed: int = 0,
) -> dict[str, float]:
    """Compare the gated RMSNorm on ``backend`` with the reference on out and all grads."""
    from ..norms.interface import rms_norm_gated_fn
    from ..norms.reference import rms_norm_gated_ref

    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    base = {
        "x": torch.randn(*shape, generator=g).to(device, dtype),
        "weight": (1 + 0.3 * torch.randn(n, generator=g)).to(device, dtype),
        "bias": (0.3 * torch.randn(n, generator=g)).to(device, dtype) if bias else None,
        "z": torch.randn(*shape, generator=g).to(device, dtype) if z else None,
    }
    grad_out = torch.randn(*shape, generator=g).to(device, dtype)  # representable in every precision

    def run(fn, inputs, **kw):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None}
        out = fn(leaves["x"], leaves["weight"], leaves.get("bias"), leaves.get("z"), eps, group_size, norm_before_gate,
                 **kw)  # fmt: skip
        result = {"out": out.detach()}
        result.update(_grads([out], [grad_out], leaves))
        return result

    fast = run(rms_norm_gated_fn, base, backend=backend)
    hi = run(rms_norm_gated_ref, {k: (v.double() if v is not None else None) for k, v in base.items()})
    lo = run(rms_norm_gated_ref, base, upcast=False)
    return _compare(fast, hi, lo)
