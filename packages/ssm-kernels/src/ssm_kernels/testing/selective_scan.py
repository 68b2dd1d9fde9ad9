"""Input factories for selective-scan tests and benchmarks (reused by the models package)."""

from __future__ import annotations

import torch

__all__ = [
    "SCAN_GRAD_NAMES",
    "clone_keep_alignment",
    "compare_scan_to_reference",
    "make_scan_inputs",
    "misaligned_copy",
    "run_scan_with_grads",
]

SCAN_GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_scan_inputs(
    batch: int,
    dim: int,
    seqlen: int,
    dstate: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    bc: str = "variable",
    groups: int = 1,
    with_D: bool = True,
    with_z: bool = True,
    with_delta_bias: bool = True,
    with_initial_state: bool = False,
    cu_seqlens: list[int] | None = None,
    bc_dtype: torch.dtype | None = None,
    requires_grad: bool = False,
    seed: int | None = None,
    positive_delta: bool = False,
) -> dict:
    """Random selective-scan inputs with realistic scales (A < 0, modest dt).

    ``delta`` is N(-1, 0.5), for calls with ``delta_softplus=True``; ``positive_delta`` passes it through softplus
    once here and makes ``delta_bias`` non-negative, for calls without it (a negative step grows the state, and over
    long sequences overflows it).

    ``bc``: ``"variable"`` (batch, N, L), ``"grouped"`` (batch, groups, N, L) or ``"constant"``
    (dim, N). With ``cu_seqlens`` (python list of offsets) batch must be 1 and ``initial_state``
    has one row per sequence. Returns a dict of keyword arguments for ``selective_scan_*``.
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None

    def rnd(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(dt)

    bdt = bc_dtype or dtype
    nseq = batch if cu_seqlens is None else len(cu_seqlens) - 1
    out = {
        "u": rnd(batch, dim, seqlen),
        "delta": rnd(batch, dim, seqlen, scale=0.5, shift=-1.0),
        "A": -torch.rand(dim, dstate, generator=gen) * 2.0 - 0.1,
    }
    if positive_delta:
        out["delta"] = torch.nn.functional.softplus(out["delta"].float()).to(dtype)
    if bc == "variable":
        out["B"], out["C"] = rnd(batch, dstate, seqlen, dt=bdt), rnd(batch, dstate, seqlen, dt=bdt)
    elif bc == "grouped":
        out["B"], out["C"] = rnd(batch, groups, dstate, seqlen, dt=bdt), rnd(batch, groups, dstate, seqlen, dt=bdt)
    elif bc == "constant":
        out["B"], out["C"] = rnd(dim, dstate, dt=torch.float32), rnd(dim, dstate, dt=torch.float32)
    else:
        raise ValueError(f"bc must be 'variable', 'grouped' or 'constant', got {bc!r}")
    out["D"] = rnd(dim, dt=torch.float32) if with_D else None
    out["z"] = rnd(batch, dim, seqlen) if with_z else None
    out["delta_bias"] = rnd(dim, scale=0.3, dt=torch.float32) if with_delta_bias else None
    if positive_delta and with_delta_bias:
        out["delta_bias"] = out["delta_bias"].abs()
    out["initial_state"] = rnd(nseq, dim, dstate, dt=torch.float32) if with_initial_state else None
    out["cu_seqlens"] = torch.tensor(cu_seqlens, dtype=torch.int32) if cu_seqlens is not None else None
    for k, v in out.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device)
            if requires_grad and v.is_floating_point():
                v.requires_grad_(True)
            out[k] = v
    return out


def make_short_case_inputs(case: tuple, device: str | torch.device = "cpu", seed: int = 0) -> dict:
    """Inputs of one short-kernel test case ``(id, batch, dim, L, N, bc, groups, init, z/D/bias, softplus,
    dtype, bc_dtype, with_last)`` (the case tables of the CUDA and emulated-kernel tests)."""
    _, batch, dim, L, N, bc, groups, init, extras, softplus, dtype, bc_dtype, _with_last = case
    return make_scan_inputs(batch, dim, L, N, bc=bc, groups=groups, with_initial_state=init, with_D=extras,
                            with_z=extras, with_delta_bias=extras, dtype=dtype, bc_dtype=bc_dtype, device=device,
                            seed=seed, positive_delta=not softplus)  # fmt: skip


def misaligned_copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``t`` that starts one element past a 16-byte boundary (no 16-byte vector access)."""
    buf = torch.empty(t.numel() + 16 // t.element_size(), dtype=t.dtype, device=t.device)
    start = (buf.data_ptr() % 16 // t.element_size() + 1) % (16 // t.element_size())
    out = buf[start : start + t.numel()].view(t.shape)
    out.copy_(t)
    assert out.is_contiguous() and out.data_ptr() % 16 != 0
    return out


def clone_keep_alignment(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``t`` that starts at the same offset from a 16-byte boundary as ``t`` (a plain clone is
    aligned, which would hide a test of the kernels' unaligned paths)."""
    t = t.detach()
    skew = t.data_ptr() % 16
    if skew == 0 or skew % t.element_size() != 0:
        return t.clone(memory_format=torch.contiguous_format)
    off = skew // t.element_size()
    buf = torch.empty(t.numel() + 16 // t.element_size(), dtype=t.dtype, device=t.device)
    start = (off - buf.data_ptr() % 16 // t.element_size()) % (16 // t.element_size())
    out = buf[start : start + t.numel()].view(t.shape)
    out.copy_(t)
    return out


def _clone_inputs(inputs: dict, dtype: torch.dtype | None) -> dict:
    """Fresh leaf copies (as misaligned as the inputs); floating tensors of the low-precision kind are cast to
    ``dtype`` (None: keep)."""
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            w = v.detach().to(dtype, copy=True) if dtype is not None else clone_keep_alignment(v)
            out[k] = w.requires_grad_(True)
        else:
            out[k] = v
    return out


def run_scan_with_grads(fn, inputs: dict, dout: torch.Tensor, dlast: torch.Tensor | None, **kw):
    """Run ``fn`` (selective_scan_fn or _ref) and backpropagate ``dout`` (and ``dlast``).

    Returns (out, last_state or None, {name: grad}) for every floating input that got a gradient.
    """
    res = fn(**inputs, return_last_state=dlast is not None, **kw)
    out, last = res if dlast is not None else (res, None)
    tensors, grads = [out], [dout.to(out.dtype)]
    if dlast is not None:
        tensors.append(last)
        grads.append(dlast.to(last.dtype))
    torch.autograd.backward(tensors, grads)
    g = {
        k: v.grad
        for k, v in inputs.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.grad is not None
    }
    return out.detach(), None if last is None else last.detach(), g


def compare_scan_to_reference(inputs: dict, *, delta_softplus: bool = True, with_last: bool = True, seed: int = 0,
                              backend: str = "cuda", hi_dtype: torch.dtype = torch.float64, check=None) -> dict:  # fmt: skip
    """Run the fast path, the reference in ``hi_dtype`` and the reference in the inputs' own dtypes.

    ``check(name, out, ref_hi, ref_lo)`` is called for the output, last_state and every gradient
    (default: :func:`ssm_kernels.testing.assert_close_to_reference`). Returns {name: (err, allowed-ish ref err)}.
    """
    from ssm_kernels.selective_scan.interface import selective_scan_fn
    from ssm_kernels.selective_scan.reference import selective_scan_ref

    from . import assert_close_to_reference, max_rel_err

    check = check or assert_close_to_reference
    u = inputs["u"]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dout = torch.randn(u.shape, generator=gen).to(u.device)
    nseq = u.shape[0] if inputs.get("cu_seqlens") is None else inputs["cu_seqlens"].numel() - 1
    dlast = torch.randn(nseq, u.shape[1], inputs["A"].shape[1], generator=gen).to(u.device) if with_last else None

    fast_in = _clone_inputs(inputs, None)
    out, last, g = run_scan_with_grads(
        selective_scan_fn, fast_in, dout, dlast, delta_softplus=delta_softplus, backend=backend
    )
    hi_in = _clone_inputs(inputs, hi_dtype)
    out_hi, last_hi, g_hi = run_scan_with_grads(selective_scan_ref, hi_in, dout, dlast, delta_softplus=delta_softplus)
    lo_in = _clone_inputs(inputs, None)
    out_lo, last_lo, g_lo = run_scan_with_grads(selective_scan_ref, lo_in, dout, dlast, delta_softplus=delta_softplus)

    report = {}
    pairs = [("out", out, out_hi, out_lo)]
    if with_last:
        pairs.append(("last_state", last, last_hi, last_lo))
    for k in g_hi:
        assert k in g, f"the fast path gave no gradient for {k}"
        pairs.append((f"d{k}", g[k], g_hi[k], g_lo[k]))
    for name, o, hi, lo in pairs:
        report[name] = (max_rel_err(o, hi), max_rel_err(lo, hi))
        check(name, o, hi, lo)
    return report
