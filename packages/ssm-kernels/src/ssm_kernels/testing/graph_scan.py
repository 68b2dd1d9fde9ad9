"""Input factories for the graph selective scan, reused by ssm-kernels and tgmamba-models tests.

The operators are bounded so that long sequences (L = 2000) stay finite: each mix operator has
rows with absolute sum 1/K (signed entries), each W has spectral norm 0.95, A is negative and
delta is small and positive, so the state map is a contraction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import assert_close_to_reference

__all__ = ["GRAPH_SCAN_ARGS", "check_graph_scan_against_reference", "graph_scan_grad_names", "make_graph_scan_inputs"]

# positional order of the op's tensor arguments (after which come delta_softplus, initial_state ...)
GRAPH_SCAN_ARGS = ("u", "delta", "A", "B", "C", "mix_A", "W_A", "mix_C", "W_C", "D", "z", "delta_bias")


def _mix(batch, T, K, V, gen, signed=True):
    m = torch.rand(batch, T, K, V, V, generator=gen, dtype=torch.float64) + 0.05
    if signed:
        m = m * torch.where(torch.rand(batch, T, K, V, V, generator=gen, dtype=torch.float64) < 0.3, -1.0, 1.0)
    return m / m.abs().sum(-1, keepdim=True) / K


def _w(K, N, gen):
    w = torch.randn(K, N, N, generator=gen, dtype=torch.float64) / N**0.5 + torch.eye(N, dtype=torch.float64)
    return 0.95 * w / torch.linalg.matrix_norm(w, ord=2)[:, None, None]


def make_graph_scan_inputs(
    batch: int = 2,
    V: int = 3,
    D: int = 3,
    N: int = 4,
    L: int = 5,
    K: int = 1,
    T: str = "1",
    mix_C: bool = False,
    K_C: int | None = None,
    T_C: str | None = None,
    with_D: bool = False,
    with_z: bool = False,
    with_bias: bool = False,
    softplus: bool = False,
    with_initial_state: bool = False,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    requires_grad: bool = False,
    identity_first: bool = False,
) -> dict:
    """Random, stable inputs as a kwargs dict for ``graph_selective_scan_fn`` / ``_ref``.

    ``T`` and ``T_C`` are ``"1"`` (one operator set for all steps) or ``"L"`` (one per step).
    ``dtype`` applies to u, delta, z, B, C, mix_*, W_*, initial_state; A, D and delta_bias are
    float32 (float64 when ``dtype`` is float64). Leaves get ``requires_grad`` when asked.
    ``identity_first``: the first of each side's K operators is the op's implicit identity (mix holds K - 1
    operators, W holds K).

    Shapes: as in :func:`ssm_kernels.graph_selective_scan_ref`.
    """
    gen = torch.Generator().manual_seed(seed)
    pdt = torch.float64 if dtype == torch.float64 else torch.float32
    TA = 1 if T == "1" else L
    T_C = T if T_C is None else T_C
    TC = 1 if T_C == "1" else L
    K_C = K if K_C is None else K_C

    def rn(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

    kw: dict = {
        "u": (rn(batch, V, D, L), dtype),
        "delta": (0.5 * torch.rand(batch, V, D, L, generator=gen, dtype=torch.float64) - 0.2, dtype)
        if softplus
        else (0.05 + 0.45 * torch.rand(batch, V, D, L, generator=gen, dtype=torch.float64), dtype),
        "A": (-(0.5 + torch.rand(D, N, generator=gen, dtype=torch.float64) * 1.5), pdt),
        "B": (rn(batch, V, N, L), dtype),
        "C": (rn(batch, V, N, L), dtype),
        "mix_A": (_mix(batch, TA, K, V, gen), dtype),
        "W_A": (_w(K, N, gen), dtype),
    }
    if mix_C:
        kw["mix_C"] = (_mix(batch, TC, K_C, V, gen) * K_C, dtype)
        kw["W_C"] = (_w(K_C, N, gen), dtype)
    if identity_first:  # W scaled by 1 / K: sum_k ||mix_k|| ||W_k|| stays below 1 with the identity's norm 1
        for name, w_name, k in (("mix_A", "W_A", K), ("mix_C", "W_C", K_C))[: 2 if mix_C else 1]:
            kw[name] = (kw[name][0][:, :, 1:].contiguous(), dtype)
            kw[w_name] = (kw[w_name][0] / k, dtype)
    if with_D:
        kw["D"] = (rn(D), pdt)
    if with_z:
        kw["z"] = (rn(batch, V, D, L), dtype)
    if with_bias:
        kw["delta_bias"] = (rn(D, scale=0.1) + (-1.5 if softplus else 0.0), pdt)
    if with_initial_state:
        kw["initial_state"] = (rn(batch, V, D, N, scale=0.5), dtype)
    out = {}
    for k, (t, dt) in kw.items():
        x = t.to(dtype=dt, device=device)
        if requires_grad:
            x.requires_grad_(True)
        out[k] = x
    out["delta_softplus"] = softplus
    return out


def graph_scan_grad_names(inputs: dict) -> list[str]:
    """Names of the tensor inputs in ``inputs`` that take gradients (in a fixed order)."""
    names = [*GRAPH_SCAN_ARGS, "initial_state"]
    return [n for n in names if isinstance(inputs.get(n), torch.Tensor) and inputs[n].is_floating_point()]


def timing_closures(fn: Callable, inputs: dict, names: list[str]) -> tuple[Callable, Callable]:
    """``(fwd, fwdbwd)`` for timing a graph-scan implementation ``fn(**inputs)``: the forward without
    autograd, and the forward plus the gradients of ``names`` for a fixed random output cotangent."""
    leaves = [inputs[n] for n in names]
    d_out = torch.randn_like(inputs["u"])

    def fwd():
        with torch.no_grad():
            fn(**inputs)

    def fwdbwd():
        torch.autograd.grad(fn(**inputs), leaves, d_out)

    return fwd, fwdbwd


def _run(
    fn: Callable,
    inputs: dict,
    names: list[str],
    cast,
    d_out,
    d_last,
    use_out: bool,
    use_last: bool,
    shared_mix: bool = False,
    strided_d_out: bool = False,
):
    leaves = {n: cast(inputs[n]).detach().clone().requires_grad_(True) for n in names}  # (no mix_C if shared)
    args = {**inputs, **leaves}
    if shared_mix:  # one operator tensor on both sides (TGMamba's readout): mix_C is mix_A
        args["mix_C"] = args["mix_A"]
    out, last = fn(**args, return_last_state=True)
    loss = 0.0
    if use_out and strided_d_out:  # the cotangent reaching ``fn`` is a (batch, V, L, D)-major view
        loss = loss + (out.transpose(-1, -2).double() * d_out.to(out.device).transpose(-1, -2).contiguous()).sum()
    elif use_out:
        loss = loss + (out.double() * d_out.to(out.device)).sum()
    if use_last:
        loss = loss + (last.double() * d_last.to(last.device)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True) if leaves else ()
    return out.detach(), last.detach(), dict(zip(leaves, grads))


def check_graph_scan_against_reference(
    fn: Callable,
    inputs: dict,
    grads: bool = True,
    use_out: bool = True,
    use_last: bool = True,
    factor: float = 2.0,
    seed: int = 1,
    shared_mix: bool = False,
    strided_d_out: bool = False,
) -> dict[str, float]:
    """Compare ``fn`` (a fast path with the op's signature) with the reference on outputs and grads.

    The reference runs twice: in float64 on upcast inputs (``ref_hi``) and on the inputs as given
    (``ref_lo``, computing in fp32); each result of ``fn`` must satisfy
    :func:`assert_close_to_reference`. The loss is ``<out, g_out> + <last_state, g_last>`` with
    random cotangents that are exact in the output dtype. Returns the max relative errors.
    ``shared_mix`` passes one tensor as both ``mix_A`` and ``mix_C`` (its gradient sums both uses);
    ``strided_d_out`` makes the output's cotangent a non-contiguous view.
    """
    from ..graph_scan.reference import graph_selective_scan_ref
    from . import max_rel_err

    names = graph_scan_grad_names(inputs) if grads else []
    if shared_mix:
        names = [n for n in names if n != "mix_C"]
        inputs = {**inputs, "mix_C": inputs["mix_A"]}
    u = inputs["u"]
    gen = torch.Generator().manual_seed(seed)
    batch, V, Dm, L = u.shape
    N = inputs["A"].shape[1]
    d_out = torch.randn(batch, V, Dm, L, generator=gen, dtype=torch.float64).to(u.dtype).double()
    d_last = torch.randn(batch, V, Dm, N, generator=gen, dtype=torch.float64).float().double()
    if not grads:
        with torch.no_grad():
            out, last = fn(**inputs, return_last_state=True)
            hi = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
            out_hi, last_hi = graph_selective_scan_ref(**hi, return_last_state=True)
            out_lo, last_lo = graph_selective_scan_ref(**inputs, return_last_state=True)
        g_f = g_hi = g_lo = {}
    else:
        opts = dict(shared_mix=shared_mix, strided_d_out=strided_d_out)
        out, last, g_f = _run(fn, inputs, names, lambda x: x, d_out, d_last, use_out, use_last, **opts)
        hi_inputs = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        out_hi, last_hi, g_hi = _run(
            graph_selective_scan_ref, hi_inputs, names, lambda x: x, d_out, d_last, use_out, use_last, **opts
        )
        out_lo, last_lo, g_lo = _run(
            graph_selective_scan_ref, inputs, names, lambda x: x, d_out, d_last, use_out, use_last, **opts
        )
    errs = {}
    # half-precision inputs allow half-precision error everywhere (also for the fp32 last_state and the
    # gradients of fp32 parameters such as A): the fast path may use tf32 dots for them
    floor = {torch.bfloat16: 1e-2, torch.float16: 2e-3}.get(u.dtype)
    assert out.dtype == u.dtype, f"out dtype {out.dtype} != u dtype {u.dtype}"
    assert_close_to_reference("out", out, out_hi, out_lo, factor=factor, floor=floor)
    errs["out"] = max_rel_err(out, out_hi)
    assert_close_to_reference("last_state", last.float(), last_hi, last_lo.float(), factor=factor, floor=floor)
    errs["last_state"] = max_rel_err(last, last_hi)
    for n in names:
        gf, gh, gl = g_f[n], g_hi[n], g_lo[n]
        if gh is None:  # the input does not reach the loss (e.g. C when only last_state is used)
            assert gf is None or gf.numel() == 0 or not gf.abs().max().item(), f"d{n}: expected no (or a zero) gradient"
            continue
        assert gf is not None, f"d{n}: the fast path returned no gradient"
        assert gf.dtype == inputs[n].dtype, f"d{n}: dtype {gf.dtype} != input dtype {inputs[n].dtype}"
        assert_close_to_reference(f"d{n}", gf, gh, gl, factor=factor, floor=floor)
        errs[f"d{n}"] = max_rel_err(gf, gh)
    return errs
