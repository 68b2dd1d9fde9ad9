"""Triton graph scan on a CUDA GPU: outputs and every gradient vs the reference (fp32 and bf16).

Run on the H200:  python -m pytest -c pyproject.toml packages/ssm-kernels/tests/graph_scan -m gpu
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.backend import triton_available
from ssm_kernels.testing import requires_cuda
from ssm_kernels.testing.graph_scan import check_graph_scan_against_reference, make_graph_scan_inputs

pytestmark = [
    pytest.mark.gpu,
    requires_cuda,
    pytest.mark.skipif(not triton_available(), reason="needs triton"),
]

SHAPES = {
    "tusz": dict(batch=256, V=19, D=64, N=16, L=10),
    "raw": dict(batch=16, V=19, D=64, N=16, L=2000),
}
# TGMamba-like options: graphconv-style K = 2, Mamba's D, z, delta_bias and softplus
MAMBA = {"with_D": True, "with_z": True, "with_bias": True, "softplus": True}


def _triton(**extra):
    from ssm_kernels.graph_scan.triton import graph_selective_scan_triton

    return lambda **kw: graph_selective_scan_triton(**kw, **extra)


TARGETS = [
    (shape, dtype, T, backward)
    for shape in SHAPES
    for dtype in (torch.float32, torch.bfloat16)
    for T in ("1", "L")
    for backward in ("split", "fused")
    if backward == "split" or (dtype == torch.float32 and T == "L")  # the fused backward: one case per shape
]


@pytest.mark.parametrize(
    "shape,dtype,T,backward", TARGETS, ids=[f"{s}-{str(d)[6:]}-T{t}-{b}" for s, d, t, b in TARGETS]
)
def test_gpu_target_shapes(shape, dtype, T, backward):
    # T = L also exercises the readout mix (mix_C / W_C, per step) and an initial state
    extra = dict(mix_C=True, K_C=1, with_initial_state=True) if T == "L" else {}
    inputs = make_graph_scan_inputs(**SHAPES[shape], K=2, T=T, dtype=dtype, device="cuda", seed=21, **MAMBA,
                                    **extra)  # fmt: skip
    check_graph_scan_against_reference(_triton(backward=backward), inputs)


AWKWARD = {
    "V8-D5-N16-L33-K1": dict(batch=3, V=8, D=5, N=16, L=33, K=1, T="L"),
    "V14-D37-N7-L1-K3": dict(batch=2, V=14, D=37, N=7, L=1, K=3, T="1", mix_C=True, **MAMBA),
    "V56-D24-N64-L17-K3": dict(batch=2, V=56, D=24, N=64, L=17, K=3, T="L", mix_C=True, K_C=2, with_z=True),
    "V64-D16-N64-L70-K2": dict(batch=2, V=64, D=16, N=64, L=70, K=2, T="1", with_initial_state=True, **MAMBA),
    "V19-D64-N16-L100-K3-mixC_TL": dict(batch=4, V=19, D=64, N=16, L=100, K=3, T="1", mix_C=True, T_C="L", **MAMBA),
    "V56-D24-N64-L17-K3-identity_first": dict(
        batch=2, V=56, D=24, N=64, L=17, K=3, T="L", mix_C=True, K_C=2, with_z=True, identity_first=True
    ),
    "V16-D33-N32-L65-K1-fp16": dict(batch=2, V=16, D=33, N=32, L=65, K=1, T="L", dtype=torch.float16, **MAMBA),
}


@pytest.mark.parametrize("backward", ["split", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("atomic", [False, True], ids=["partials", "atomics"])
def test_gpu_shared_mix_and_strided_d_out(monkeypatch, atomic, dtype, backward):
    """TGMamba's call: one per-step operator tensor as mix_A and mix_C, d_out a (batch, V, L, D)-major view."""
    import ssm_kernels.graph_scan.triton as gst

    if atomic:
        monkeypatch.setattr(gst, "_ATOMIC_BYTES", 0)
    inputs = make_graph_scan_inputs(batch=3, V=19, D=64, N=16, L=300, K=2, T="L", mix_C=True, K_C=2, T_C="L",
                                    dtype=dtype, device="cuda", seed=23, **MAMBA)  # fmt: skip
    check_graph_scan_against_reference(_triton(backward=backward), inputs, shared_mix=True, strided_d_out=True)


@pytest.mark.parametrize("backward", ["split", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gpu_implicit_identity_first(dtype, backward):
    """TGMamba's graphconv call: W with one operator more than the shared per-step mix (implicit identity first)."""
    inputs = make_graph_scan_inputs(batch=3, V=19, D=64, N=16, L=300, K=2, T="L", mix_C=True, K_C=2, T_C="L",
                                    dtype=dtype, device="cuda", seed=26, identity_first=True, **MAMBA)  # fmt: skip
    check_graph_scan_against_reference(_triton(backward=backward), inputs, shared_mix=True, strided_d_out=True)


@pytest.mark.parametrize("mode", ["parallel", "q", "q-kernel", "q-fused", "q-bmm"])
@pytest.mark.parametrize("shape", ["tusz", "raw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gpu_parallel_readout(monkeypatch, shape, dtype, mode):
    """The readout and its adjoint in their own parallel kernels (``SSM_KERNELS_GRAPH_SCAN_READOUT_FWD/_BWD``;
    ``q``: with the readout operators folded; ``q-kernel`` / ``q-fused`` / ``q-bmm``: folded, with the readout
    gradients' Q formed in the folded adjoint kernel, contracted there, or by cuBLAS,
    ``SSM_KERNELS_GRAPH_SCAN_READOUT_Q``) at TGMamba's call: shared per-step operators with the implicit identity
    first, strided d_out, initial state."""
    if mode.startswith("q-"):
        monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_Q", mode[2:])
        mode = "q"
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_FWD", mode)
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_BWD", mode)
    inputs = make_graph_scan_inputs(**SHAPES[shape], K=2, T="L", mix_C=True, K_C=2, T_C="L", dtype=dtype,
                                    device="cuda", seed=27, identity_first=True, with_initial_state=True,
                                    **MAMBA)  # fmt: skip
    check_graph_scan_against_reference(_triton(backward="split"), inputs, shared_mix=True, strided_d_out=True)


OPGRAD_CASES = {
    # TGMamba's call at both target shapes (fp32, bf16), and away from it: V 56 / N 64 with the identity first,
    # three stored operators shared by all steps with D past one channel block
    **{f"{shape}-{str(dt)[6:]}": dict(**SHAPES[shape], K=2, T="L", mix_C=True, K_C=2, T_C="L", dtype=dt,
                                      identity_first=True, with_initial_state=True, **MAMBA)
       for shape in SHAPES for dt in (torch.float32, torch.bfloat16)},
    "V56-D24-N64-L17-K3-identity_first": dict(batch=2, V=56, D=24, N=64, L=17, K=3, T="L", identity_first=True,
                                              with_z=True),
    "V14-D37-N7-L33-K3-T1": dict(batch=2, V=14, D=37, N=7, L=33, K=3, T="1", **MAMBA),
}  # fmt: skip


@pytest.mark.parametrize("mode", ["stored", "stored-dw-bmm", "cublas"])
@pytest.mark.parametrize("case", list(OPGRAD_CASES), ids=list(OPGRAD_CASES))
def test_gpu_opgrad_modes(monkeypatch, case, mode):
    """``SSM_KERNELS_GRAPH_SCAN_OPGRAD``: dmix_A / dW_A from products on the vertex products and ``dP W_k^T`` kept
    by the sequential kernels (``stored``, the default;
    dW_A from ``_graph_scan_dw_kernel``, or batched cuBLAS products with ``SSM_KERNELS_GRAPH_SCAN_DW=bmm``), or on
    operands cuBLAS products form themselves (``cublas``). The target shapes as the defaults run them (raw:
    recomputed chunks; TUSZ: every state kept, and with ``stored`` the vertex products too); recomputed 8-step
    chunks in the other cases. Outputs and every gradient against the reference."""
    if mode == "stored-dw-bmm":
        monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_DW", "bmm")
        mode = "stored"
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OPGRAD", mode)
    kw = OPGRAD_CASES[case]
    inputs = make_graph_scan_inputs(device="cuda", seed=43, **kw)
    shared = kw.get("K") == kw.get("K_C") and kw.get("T") == kw.get("T_C")
    chunk = 8 if case.startswith("V") else None
    check_graph_scan_against_reference(_triton(backward="split", chunk=chunk), inputs, shared_mix=shared)


LEAN_CASES = {
    **OPGRAD_CASES,
    "V8-D5-N16-L33-K1-no_mixC": dict(batch=3, V=8, D=5, N=16, L=33, K=1, T="L", with_initial_state=True, **MAMBA),
    "V16-D33-N32-L65-K1-fp16-inline": dict(batch=2, V=16, D=33, N=32, L=65, K=1, T="L", mix_C=True, K_C=2,
                                           dtype=torch.float16, **MAMBA),
}  # fmt: skip


@pytest.mark.parametrize("adj", ["lean", "full"])
@pytest.mark.parametrize("case", list(LEAN_CASES), ids=list(LEAN_CASES))
def test_gpu_adjoint_modes(monkeypatch, case, adj):
    """``SSM_KERNELS_GRAPH_SCAN_ADJ``: ``lean`` (the default), the adjoint recurrence alone in
    ``_graph_scan_adj_chain_kernel`` and the element-wise gradients and dP from ``_graph_scan_adj_grads_kernel`` after
    it, or ``full``, both in ``_graph_scan_adj_kernel``. The target shapes as the defaults run them, and away from
    them (no readout operators; the readout's adjoint formed in the chain; V 56 / N 64). Outputs and every gradient
    against the reference."""
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_ADJ", adj)
    if case.endswith("inline"):
        monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_BWD", "inline")
    kw = LEAN_CASES[case]
    inputs = make_graph_scan_inputs(device="cuda", seed=44, **kw)
    shared = kw.get("K") == kw.get("K_C") and kw.get("T") == kw.get("T_C")
    chunk = 8 if case.startswith("V") else None
    check_graph_scan_against_reference(_triton(backward="split", chunk=chunk), inputs, shared_mix=shared)


FOLDED_CASES = {
    # the folded readout (READOUT_FWD / _BWD=q) away from TGMamba's call: three stored operators without the
    # identity (8 warps), D past one 64-channel block with shared operators, fp16
    "V56-D24-N32-L17-K3": dict(batch=2, V=56, D=24, N=32, L=17, K=2, T="L", mix_C=True, K_C=3, T_C="L"),
    "V8-D70-N7-L33-T1": dict(batch=3, V=8, D=70, N=7, L=33, K=1, T="1", mix_C=True, K_C=1, T_C="1", with_z=True,
                             with_D=True),
    "V14-D37-N17-L70-K2-fp16": dict(batch=2, V=14, D=37, N=17, L=70, K=2, T="L", mix_C=True, K_C=2, T_C="L",
                                    identity_first=True, dtype=torch.float16, with_z=True),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FOLDED_CASES), ids=list(FOLDED_CASES))
def test_gpu_folded_readout_awkward(monkeypatch, case):
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_FWD", "q")
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_BWD", "q")
    inputs = make_graph_scan_inputs(device="cuda", seed=33, **FOLDED_CASES[case])
    check_graph_scan_against_reference(_triton(backward="split"), inputs)


CUDA_FWD_CASES = {
    # TGMamba's call at both target shapes, fp32 and bf16 (operators in the inputs' dtype, as the block passes them)
    **{f"{shape}-{str(dt)[6:]}": dict(**SHAPES[shape], K=2, T="L", mix_C=True, K_C=2, T_C="L", dtype=dt,
                                      identity_first=True, with_initial_state=True)
       for shape in SHAPES for dt in (torch.float32, torch.bfloat16)},
    "V8-D5-N7-L33-K1-T1": dict(batch=3, V=8, D=5, N=7, L=33, K=1, T="1", mix_C=True, K_C=1, T_C="1"),
    "V56-D24-N32-L17-K2": dict(batch=2, V=56, D=24, N=32, L=17, K=2, T="L", mix_C=True, K_C=2, T_C="L"),
    "V14-D37-N17-L70-K2-fp16": dict(batch=2, V=14, D=37, N=17, L=70, K=2, T="L", mix_C=True, K_C=2, T_C="L",
                                    dtype=torch.float16),
}  # fmt: skip


CUDA_SIDES = [(case, "FWD+BWD") for case in CUDA_FWD_CASES] + [
    (case, side) for case in ("tusz-float32", "raw-float32") for side in ("FWD", "BWD")
]


@pytest.mark.parametrize("case,sides", CUDA_SIDES, ids=[f"{c}-{s}" for c, s in CUDA_SIDES])
def test_gpu_cuda_recurrences(monkeypatch, case, sides):
    """``SSM_KERNELS_GRAPH_SCAN_CUDA_FWD=1`` / ``_CUDA_BWD=1``: the CUDA-core forward recurrence (training forward
    and the split backward's recompute) and / or adjoint in place of the Triton kernels: outputs and every gradient
    against the reference."""
    import ssm_kernels.graph_scan.cuda as gs_cuda

    calls = {"FWD": [], "BWD": []}
    for side, name in (("FWD", "fwd_recurrence"), ("BWD", "adj_recurrence")):
        monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_CUDA_" + side, "1" if side in sides else "0")
        real = getattr(gs_cuda, name)
        monkeypatch.setattr(gs_cuda, name, lambda *a, _r=real, _c=calls[side], **k: _c.append(1) or _r(*a, **k))
    kw = CUDA_FWD_CASES[case]
    inputs = make_graph_scan_inputs(device="cuda", seed=31, **MAMBA, **kw)
    shared = kw.get("K") == kw.get("K_C") and kw.get("T") == kw.get("T_C")
    check_graph_scan_against_reference(_triton(backward="split"), inputs, shared_mix=shared, strided_d_out=True)
    for side in ("FWD", "BWD"):
        assert bool(calls[side]) == (side in sides), f"CUDA {side} calls: {len(calls[side])}"
    if "FWD" in sides:  # inference: the CUDA forward with its readout, no gradients
        n = len(calls["FWD"])
        check_graph_scan_against_reference(_triton(backward="split"), inputs, grads=False)
        assert len(calls["FWD"]) > n


@pytest.mark.parametrize("backward", ["split", "fused"])
@pytest.mark.parametrize("case", list(AWKWARD), ids=list(AWKWARD))
def test_gpu_awkward_sizes(case, backward):
    kw = dict(AWKWARD[case])
    inputs = make_graph_scan_inputs(device="cuda", seed=22, **kw)
    check_graph_scan_against_reference(_triton(backward=backward), inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gpu_auto_dispatch_and_small_chunks(dtype):
    from ssm_kernels import graph_selective_scan_fn

    inputs = make_graph_scan_inputs(batch=3, V=19, D=40, N=16, L=50, K=2, T="L", mix_C=True, dtype=dtype,
                                    device="cuda", seed=23, **MAMBA)  # fmt: skip
    check_graph_scan_against_reference(graph_selective_scan_fn, inputs)
    check_graph_scan_against_reference(_triton(chunk=7, block_d_fwd=4, block_d_bwd=2), inputs)
    check_graph_scan_against_reference(_triton(chunk=7, backward="fused"), inputs)


def _grads(fn, inputs, names):
    leaves = {n: inputs[n].detach().clone().requires_grad_(True) for n in names}
    out, last = fn(**{**inputs, **leaves}, return_last_state=True)
    g = torch.autograd.grad(out.float().sum() + last.sum(), [leaves[n] for n in names])
    return out, last, g


DETERMINISM = [("tusz", "split", "full"), ("tusz", "fused", "full"), ("raw", "split", "full"), ("tusz", "split", "lean"),
               ("raw", "split", "lean")]  # fmt: skip


@pytest.mark.parametrize("shape,backward,adj", DETERMINISM, ids=["-".join(c) for c in DETERMINISM])
def test_gpu_deterministic_backward(monkeypatch, shape, backward, adj):
    """Two identical backward passes agree bit for bit (raw, split: dB's partials kept per chunk, not atomics; with
    the lean adjoint, whose element-wise kernel splits each chunk's steps over programs with their own partials)."""
    from ssm_kernels.testing.graph_scan import graph_scan_grad_names

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_ADJ", adj)

    inputs = make_graph_scan_inputs(**SHAPES[shape], K=2, T="L", mix_C=True, device="cuda", seed=24, **MAMBA)
    names = graph_scan_grad_names(inputs)
    r1 = _grads(_triton(backward=backward), inputs, names)
    r2 = _grads(_triton(backward=backward), inputs, names)
    torch.testing.assert_close(r1[0], r2[0], rtol=0, atol=0)
    for n, a, b in zip(names, r1[2], r2[2]):
        assert torch.equal(a, b), f"d{n} differs between two identical backward passes"


@pytest.mark.parametrize("backward", ["split", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gpu_raw_shape_memory_bounded(dtype, backward):
    """Forward + backward at the raw shape: the op's own memory (beyond inputs) stays under 2 GiB."""
    from ssm_kernels.testing.graph_scan import graph_scan_grad_names

    inputs = make_graph_scan_inputs(**SHAPES["raw"], K=2, T="1", device="cuda", dtype=dtype, seed=25,
                                    requires_grad=True, **MAMBA)  # fmt: skip
    names = graph_scan_grad_names(inputs)
    fn = _triton(backward=backward)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn(**inputs)
    torch.autograd.grad(out.float().sum(), [inputs[n] for n in names])
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    assert peak < 2 * 2**30, f"peak memory {peak / 2**30:.2f} GiB"


OVERLAP_CASES = {
    # TGMamba's raw call (its chunk from the scratch budget), and many short chunks (events between every pair)
    "raw": (dict(SHAPES["raw"], K=2, T="L", mix_C=True, K_C=2, T_C="L", with_initial_state=True, **MAMBA), None),
    "V19-D64-L333-chunk8-bf16": (dict(batch=4, V=19, D=64, N=16, L=333, K=2, T="L", mix_C=True, K_C=2, T_C="L",
                                      dtype=torch.bfloat16, **MAMBA), 8),
}  # fmt: skip


@pytest.mark.parametrize("case", list(OVERLAP_CASES), ids=list(OVERLAP_CASES))
def test_gpu_overlap_streams(monkeypatch, case):
    """``SSM_KERNELS_GRAPH_SCAN_OVERLAP=1``: the training forward's readout and the backward's recompute on a side
    stream, two slots of chunk buffers. Outputs and every gradient against the reference, the same as one stream
    (to rounding: the chunks differ) and bit for bit the same in two runs (a missing wait would race)."""
    from ssm_kernels.testing.graph_scan import graph_scan_grad_names

    kw, chunk = OVERLAP_CASES[case]
    inputs = make_graph_scan_inputs(device="cuda", seed=46, **kw)
    fn = _triton(backward="split", chunk=chunk)
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OVERLAP", "1")
    check_graph_scan_against_reference(fn, inputs, shared_mix=True)
    inputs = {**inputs, "mix_C": inputs["mix_A"]}
    names = [n for n in graph_scan_grad_names(inputs) if n != "mix_C"]
    r1, r2 = _grads(fn, inputs, names), _grads(fn, inputs, names)
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OVERLAP", "0")
    r0 = _grads(fn, inputs, names)
    torch.testing.assert_close(r1[0], r2[0], rtol=0, atol=0)
    torch.testing.assert_close(r1[0], r0[0], rtol=1e-6, atol=0)
    rtol = 2e-3 if kw.get("dtype") is None else 2e-2  # gradients rounded to bf16 may differ by an ulp
    for n, a, b, c in zip(names, r1[2], r2[2], r0[2]):
        assert torch.equal(a, b), f"d{n} differs between two overlapped backward passes"
        torch.testing.assert_close(a.float(), c.float(), rtol=rtol, atol=1e-5 * c.float().abs().max().item())
