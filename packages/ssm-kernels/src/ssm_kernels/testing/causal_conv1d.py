"""Input factories and kernel-vs-reference checks for the causal conv1d (tests, GPU check script)."""

from __future__ import annotations

import torch

from . import assert_close_to_reference, max_rel_err

__all__ = ["check_conv1d", "check_conv1d_update", "make_conv1d_inputs"]


def make_conv1d_inputs(
    batch: int,
    dim: int,
    seqlen: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    bias: bool = True,
    init: bool = False,
    seq: bool = False,
    channel_last: bool = False,
    seed: int = 0,
) -> dict:
    """Random inputs for ``causal_conv1d_fn`` (fresh per seed); ``seq`` packs 1-3 sequences per row."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    if channel_last:
        x = rnd(batch, seqlen, dim).transpose(1, 2)
    else:
        x = rnd(batch, dim, seqlen)
    out = {
        "x": x,
        "weight": rnd(dim, width, scale=width**-0.5),
        "bias": rnd(dim) if bias else None,
        "initial_states": rnd(batch, dim, width - 1) if init else None,
        "seq_idx": None,
    }
    if seq:
        cuts = torch.randint(0, 3, (batch, seqlen), generator=g)
        cuts[:, 0] = 0
        out["seq_idx"] = (torch.cumsum((cuts == 0).int(), dim=1) - 1).to(device=device, dtype=torch.int32)
    return out


def _run(fn, inputs, activation, return_final_states, grad_out, grad_final, backend=None, **kw):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None and k != "seq_idx"}
    kwargs = dict(inputs, **leaves)
    if backend is not None:
        kwargs["backend"] = backend
    kwargs.update(kw)
    res = fn(**kwargs, return_final_states=return_final_states, activation=activation)
    out, final = res if return_final_states else (res, None)
    loss = (out.double() * grad_out.double()).sum()
    if final is not None:
        loss = loss + (final.double() * grad_final.double()).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    result = {"out": out.detach()}
    if final is not None:
        result["final_states"] = final.detach()
    result.update({f"d{n}": gr for n, gr in zip(names, grads)})
    return result


def check_conv1d(
    inputs: dict,
    activation: str | None = "silu",
    return_final_states: bool = False,
    backend: str = "triton",
    seed: int = 0,
) -> dict[str, float]:
    """Run ``causal_conv1d_fn`` on ``backend`` and compare output, final state and every gradient.

    Tolerance: :func:`assert_close_to_reference` against the float64 reference, with the reference
    computed in the inputs' own dtype (``upcast=False``) as the yardstick. Returns ``{name: relative error}``.
    """
    from ..causal_conv1d.interface import causal_conv1d_fn
    from ..causal_conv1d.reference import causal_conv1d_ref

    x = inputs["x"]
    g = torch.Generator().manual_seed(seed + 1)
    grad_out = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    width = inputs["weight"].shape[1]
    grad_final = torch.randn(x.shape[0], x.shape[1], width - 1, generator=g).to(x.device, x.dtype)
    fast = _run(causal_conv1d_fn, inputs, activation, return_final_states, grad_out, grad_final, backend)
    hi_inputs = {k: (v.double() if v is not None and v.is_floating_point() else v) for k, v in inputs.items()}
    hi = _run(causal_conv1d_ref, hi_inputs, activation, return_final_states, grad_out, grad_final)
    lo = _run(causal_conv1d_ref, inputs, activation, return_final_states, grad_out, grad_final, upcast=False)
    errs = {}
    for name, value in fast.items():
        assert_close_to_reference(name, value, hi[name], lo[name])
        errs[name] = max_rel_err(value, hi[name])
    return errs


def check_conv1d_update(
    batch: int,
    dim: int,
    seqlen: int | None,
    width: int,
    state_len: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    circular: bool = False,
    indices: bool = False,
    bias: bool = True,
    activation: str | None = "silu",
    backend: str = "triton",
    seed: int = 0,
) -> dict[str, float]:
    """Compare ``causal_conv1d_update`` on ``backend`` with the reference: output and updated state."""
    from ..causal_conv1d.interface import causal_conv1d_update
    from ..causal_conv1d.reference import causal_conv1d_update_ref

    g = torch.Generator().manual_seed(seed)
    xshape = (batch, dim) if seqlen is None else (batch, dim, seqlen)
    x = torch.randn(*xshape, generator=g).to(device, dtype)
    rows = batch + 3 if indices else batch
    state = torch.randn(rows, dim, state_len, generator=g).to(device, dtype)
    weight = (torch.randn(dim, width, generator=g) * width**-0.5).to(device, dtype)
    b = torch.randn(dim, generator=g).to(device, dtype) if bias else None
    cache = torch.randint(0, 3 * state_len, (batch,), generator=g).to(device, torch.int32) if circular else None
    idx = torch.randperm(rows, generator=g)[:batch].to(device, torch.int32) if indices else None
    s_fast, s_hi, s_lo = state.clone(), state.double(), state.clone()
    out = causal_conv1d_update(x, s_fast, weight, b, activation, cache, idx, backend=backend)
    dbl = lambda t: t.double() if t is not None else None
    hi = causal_conv1d_update_ref(x.double(), s_hi, weight.double(), dbl(b), activation, cache, idx)
    lo = causal_conv1d_update_ref(x, s_lo, weight, b, activation, cache, idx)
    assert_close_to_reference("out", out, hi, lo)
    assert_close_to_reference("conv_state", s_fast, s_hi, s_lo)
    return {"out": max_rel_err(out, hi), "conv_state": max_rel_err(s_fast, s_hi)}
