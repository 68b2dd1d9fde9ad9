"""Triton graph scan under TRITON_INTERPRET=1 (CPU): forward and every gradient vs the reference.

Tiny shapes; the interpreter's default chunk (8 steps) and block of channels (2) make L = 37 run
through five checkpoint chunks and D = 3 / 5 through partial channel blocks.
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.backend import triton_available, triton_interpret
from ssm_kernels.testing.graph_scan import check_graph_scan_against_reference, make_graph_scan_inputs

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.skipif(not (triton_interpret() and triton_available()), reason="needs TRITON_INTERPRET=1 and triton"),
]

FULL = {"with_D": True, "with_z": True, "with_bias": True, "softplus": True, "with_initial_state": True}
CASES = {
    # id: (factory kwargs, triton kwargs)
    "V3-D3-N4-L37-K2-TL-mixC_K3_T1-all_options": (
        dict(V=3, D=3, N=4, L=37, K=2, T="L", mix_C=True, K_C=3, T_C="1", **FULL), {}),
    "V5-D3-N7-L1-K3-T1-mixC-plain": (dict(V=5, D=3, N=7, L=1, K=3, T="1", mix_C=True, K_C=1), {}),
    "V5-D5-N16-L5-K1-T1-D_bias": (dict(V=5, D=5, N=16, L=5, K=1, T="1", with_D=True, with_bias=True), {}),
    "V3-D3-N5-L9-K1-TL-chunk4-BD4-z_init": (
        dict(V=3, D=3, N=5, L=9, K=1, T="L", with_z=True, with_initial_state=True), dict(chunk=4, block_d_fwd=4,
                                                                                        block_d_bwd=4)),
    # chunk 1: the forward stores every state and the backward recomputes nothing (ALL_STATES)
    "V3-D5-N4-L7-K2-TL-mixC_K2_TL-all_states": (
        dict(V=3, D=5, N=4, L=7, K=2, T="L", mix_C=True, K_C=2, T_C="L", **FULL), dict(chunk=1)),
    "V4-D3-N5-L1-K1-T1-all_states": (dict(V=4, D=3, N=5, L=1, K=1, T="1", with_z=True), dict(chunk=1)),
    "bf16-V3-D3-N4-L6-K2-TL-mixC": (
        dict(V=3, D=3, N=4, L=6, K=2, T="L", mix_C=True, with_z=True, softplus=True, dtype=torch.bfloat16), {}),
}  # fmt: skip


def _triton(**extra):
    from ssm_kernels.graph_scan.triton import graph_selective_scan_triton

    return lambda **kw: graph_selective_scan_triton(**kw, **extra)


@pytest.mark.parametrize("backward", ["split", "split-full", "fused"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_triton_matches_reference(monkeypatch, case, backward):
    """split: the lean adjoint (the default); split-full: ``SSM_KERNELS_GRAPH_SCAN_ADJ=full``."""
    if backward == "split-full":
        monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_ADJ", "full")
        backward = "split"
    factory, extra = CASES[case]
    inputs = make_graph_scan_inputs(batch=2, seed=11, **factory)
    check_graph_scan_against_reference(_triton(**extra, backward=backward), inputs)


@pytest.mark.parametrize("readout", ["inline", "parallel"])
@pytest.mark.parametrize("chunk", [None, 1, 37], ids=["chunk8", "chunk1", "all_states"])
def test_split_backward_chunks(monkeypatch, chunk, readout):
    """Split backward: checkpoint chunks recomputed by the forward kernel (one launch per chunk), or every state
    kept by the forward (chunk >= L: no recompute). With the parallel forward readout the training forward itself
    runs the recurrence alone (no ``out``), one launch per chunk (one with every state kept)."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_FWD", readout)
    launches = []
    real = gst._fwd_launch
    monkeypatch.setattr(gst, "_fwd_launch", lambda *a, **k: launches.append(k.get("out") is None) or real(*a, **k))
    inputs = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=37, K=2, T="L", mix_C=True, K_C=3, T_C="1", seed=18,
                                    **FULL)  # fmt: skip
    check_graph_scan_against_reference(_triton(chunk=chunk, backward="split"), inputs)
    recomputes = {None: 5, 1: 37, 37: 0}[chunk]
    if readout == "parallel":
        recomputes += {None: 5, 1: 37, 37: 1}[chunk]  # the training forward's recurrence-only launches
    # one training forward (writing out itself only with the inline readout), then the backward
    assert launches.count(True) == recomputes and launches.count(False) == (readout == "inline")


@pytest.mark.parametrize("readout", ["q", "inline"])
@pytest.mark.parametrize("opgrad", ["stored", "cublas"])
def test_overlap_two_slots(monkeypatch, readout, opgrad):
    """``SSM_KERNELS_GRAPH_SCAN_OVERLAP=1``: the split design's chunk loops take two slots of their chunk buffers
    (streams only on CUDA; here one stream, so the rotation itself is checked): the training forward's recurrence
    launches alternate between two states buffers (each chunk starting from the previous slot's last state, no
    copy), and so do the backward's recomputes, walking back from the last of five chunks, with the stored operands
    (``mix_k H``) beside them. Every gradient against the reference, with an initial state and shared operators."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OVERLAP", "1")
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_FWD", readout)
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OPGRAD", opgrad)
    launches = []
    real = gst._fwd_launch

    def record(*a, **k):
        ptrs = [None if k.get(b) is None else k[b].data_ptr() for b in ("states", "xbuf")]
        launches.append((a[15], *ptrs))  # (t0, states, mix_k H)
        return real(*a, **k)

    monkeypatch.setattr(gst, "_fwd_launch", record)
    inputs = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=37, K=2, T="L", mix_C=True, K_C=2, T_C="L", seed=19,
                                    **FULL)  # fmt: skip
    check_graph_scan_against_reference(_triton(backward="split"), inputs, shared_mix=True)
    fwd = launches[:5] if readout == "q" else []
    bwd = launches[len(fwd) + (readout == "inline") :]
    assert [t0 for t0, *_ in fwd] == ([0, 8, 16, 24, 32] if readout == "q" else [])  # inline: one launch, no slots
    assert [t0 for t0, *_ in bwd] == [32, 24, 16, 8, 0]
    for seq in (fwd, bwd) if readout == "q" else (bwd,):
        slots = [ptrs for _, *ptrs in seq]
        assert slots[0::2] == [slots[0]] * len(slots[0::2]) and slots[1::2] == [slots[1]] * len(slots[1::2])
        assert slots[0][0] != slots[1][0]
    assert all(x is None for *_, x in fwd)
    assert (bwd[0][2] is None) == (opgrad == "cublas") and (opgrad == "cublas" or bwd[0][2] != bwd[1][2])


def test_overlap_env_checked_and_chunks(monkeypatch):
    """The overlap's second slots shorten the backward's chunks for the same scratch; the variable is checked."""
    from types import SimpleNamespace

    import ssm_kernels.graph_scan.triton as gst

    raw = SimpleNamespace(shape=(16, 19, 64, 2000), device=torch.device("cuda"))
    step = 16 * 19 * 64 * 16 * 4
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OVERLAP", "1")  # states, dP, work, mix_k H and a second slot of both
    assert gst._split_chunk(raw, 16, None) == gst._SPLIT_CHUNK_BYTES // (6 * step) == 44
    assert gst._split_chunk(raw, 16, None, K_A=2) == gst._SPLIT_CHUNK_BYTES // (10 * step)
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OVERLAP", "yes")
    with pytest.raises(ValueError, match="SSM_KERNELS_GRAPH_SCAN_OVERLAP"):
        gst._split_chunk(raw, 16, None)


@pytest.mark.parametrize("side", ["FWD", "BWD"])
@pytest.mark.parametrize("T", ["L", "1"])
def test_prefetch_off(monkeypatch, side, T):
    """The sequential kernels without prefetching the next step's loads (on by default) give the same results;
    time-varying and shared operators, readout with the implicit identity, recomputed chunks."""
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_PREFETCH_" + side, "0")
    inputs = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=11, K=2, T=T, mix_C=True, K_C=2, T_C=T, seed=23,
                                    identity_first=True, **FULL)  # fmt: skip
    check_graph_scan_against_reference(_triton(chunk=4, backward="split"), inputs)


PARALLEL_READOUT_CASES = {
    # id: (factory kwargs, triton kwargs, check kwargs)
    "TL-mixC_T1-recompute": (dict(V=3, D=3, N=4, L=11, K=2, T="L", mix_C=True, K_C=3, T_C="1", **FULL),
                             dict(chunk=4), {}),
    "TL-identity_first-shared-strided_dout": (
        dict(V=3, D=5, N=4, L=9, K=2, T="L", mix_C=True, K_C=2, T_C="L", identity_first=True, **FULL),
        dict(chunk=4), dict(shared_mix=True, strided_d_out=True)),
    "T1-all_states-no_z_no_D": (dict(V=4, D=3, N=5, L=6, K=2, T="1", mix_C=True, K_C=1, T_C="1"), dict(chunk=6), {}),
    "bf16-TL-recompute": (dict(V=3, D=3, N=4, L=7, K=2, T="L", mix_C=True, with_z=True, softplus=True,
                               dtype=torch.bfloat16), dict(chunk=3), {}),
}  # fmt: skip


def _record_launches(monkeypatch, gst) -> list[tuple]:
    """Record every kernel launch of the graph scan's Triton path as (kernel, compile-time arguments)."""
    launches: list[tuple] = []
    real = gst._launch

    def launch(kernel, grid, args, meta):
        launches.append((kernel, meta))
        return real(kernel, grid, args, meta)

    monkeypatch.setattr(gst, "_launch", launch)
    return launches


def _kernels(launches: list[tuple]) -> list:
    return [kernel for kernel, _ in launches]


def _check_readout_case(monkeypatch, gst, case, seed):
    """Run a PARALLEL_READOUT_CASES case's split design against the reference, recording the kernels launched;
    returns (launched, factory kwargs, triton kwargs)."""
    launches = _record_launches(monkeypatch, gst)
    factory, extra, check = PARALLEL_READOUT_CASES[case]
    inputs = make_graph_scan_inputs(batch=2, seed=seed, **factory)
    check_graph_scan_against_reference(_triton(**extra, backward="split"), inputs, **check)
    return _kernels(launches), factory, extra


@pytest.mark.parametrize("sides", [("FWD", "BWD"), ("FWD",), ("BWD",), ()], ids=["both", "fwd", "bwd", "inline"])
@pytest.mark.parametrize("case", list(PARALLEL_READOUT_CASES), ids=list(PARALLEL_READOUT_CASES))
def test_parallel_readout(monkeypatch, case, sides):
    """The readout (forward) and its adjoint (split backward) in their own parallel kernels instead of the
    sequential ones (``SSM_KERNELS_GRAPH_SCAN_READOUT_FWD/_BWD=parallel``): outputs, last state and every gradient
    against the reference, with recomputed chunks and with every state kept."""
    import ssm_kernels.graph_scan.triton as gst

    for side in ("FWD", "BWD"):  # the sides not asked for explicitly inline (the defaults differ per side)
        monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_" + side, "parallel" if side in sides else "inline")
    launched, factory, extra = _check_readout_case(monkeypatch, gst, case, seed=29)
    assert (gst._graph_scan_readout_kernel in launched) == ("FWD" in sides)
    assert (gst._graph_scan_readout_adj_kernel in launched) == ("BWD" in sides)


@pytest.mark.parametrize("bwd", ["inline", "parallel", "q"])
@pytest.mark.parametrize("case", list(PARALLEL_READOUT_CASES), ids=list(PARALLEL_READOUT_CASES))
def test_folded_readout(monkeypatch, case, bwd):
    """``SSM_KERNELS_GRAPH_SCAN_READOUT_FWD=q``: the forward's parallel readout through the step's readout
    operators folded into one (V, V, N) operator inside the program (``_graph_scan_readout_q_kernel``), and with
    ``_BWD=q`` the readout's adjoint likewise (``_graph_scan_readout_adj_q_kernel``): one launch per chunk."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_FWD", "q")
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_BWD", bwd)
    launched, factory, extra = _check_readout_case(monkeypatch, gst, case, seed=31)
    assert gst._graph_scan_readout_kernel not in launched
    chunks = -(-factory["L"] // extra["chunk"])
    assert launched.count(gst._graph_scan_readout_q_kernel) == chunks
    assert launched.count(gst._graph_scan_readout_adj_q_kernel) == (chunks if bwd == "q" else 0)
    assert (gst._graph_scan_readout_adj_kernel in launched) == (bwd == "parallel")


def test_parallel_readout_env_checked(monkeypatch):
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.delenv("SSM_KERNELS_GRAPH_SCAN_READOUT_FWD", raising=False)
    monkeypatch.delenv("SSM_KERNELS_GRAPH_SCAN_READOUT_BWD", raising=False)
    assert (gst._readout_mode("FWD"), gst._readout_mode("BWD")) == ("q", "q")  # the run20b defaults
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_FWD", "sideways")
    with pytest.raises(ValueError, match="SSM_KERNELS_GRAPH_SCAN_READOUT_FWD"):
        gst._readout_mode("FWD")


def test_split_backward_subset_of_grads():
    """Only some inputs need gradients: the split backward skips the operator products it need not do."""
    from ssm_kernels.graph_scan.reference import graph_selective_scan_ref
    from ssm_kernels.graph_scan.triton import graph_selective_scan_triton
    from ssm_kernels.testing import assert_close_to_reference

    inputs = make_graph_scan_inputs(batch=2, V=3, D=5, N=4, L=9, K=2, T="L", mix_C=True, seed=19, **FULL)
    for wanted in (("u",), ("W_C", "delta"), ("mix_A", "initial_state")):
        grads = {}
        for name, fn in (("fast", graph_selective_scan_triton), ("hi", graph_selective_scan_ref),
                         ("lo", graph_selective_scan_ref)):  # fmt: skip
            kw = {k: (v.double() if name == "hi" and isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
            kw = {k: (v.detach().requires_grad_(k in wanted) if isinstance(v, torch.Tensor) else v)
                  for k, v in kw.items()}  # fmt: skip
            extra = {"backward": "split", "chunk": 4} if name == "fast" else {}
            out = fn(**kw, **extra)
            grads[name] = torch.autograd.grad(out.float().square().sum(), [kw[k] for k in wanted])
        for i, k in enumerate(wanted):
            assert_close_to_reference(k, grads["fast"][i], grads["hi"][i], grads["lo"][i])


def test_backward_mode_env(monkeypatch):
    import ssm_kernels.graph_scan.triton as gst

    assert gst._bwd_mode() == gst._DEFAULT_BWD
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_BWD", "fused")
    assert gst._bwd_mode() == "fused"
    assert gst._bwd_mode("split") == "split"
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_BWD", "both")
    with pytest.raises(ValueError, match="SSM_KERNELS_GRAPH_SCAN_BWD"):
        gst._bwd_mode()


@pytest.mark.parametrize("backward", ["split", "fused"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_triton_operator_loop_not_unrolled(monkeypatch, chunk, backward):
    """SSM_KERNELS_GRAPH_SCAN_UNROLL=0: the runtime loop over the K operators (used for large V, N)."""
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_UNROLL", "0")
    inputs = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=5, K=2, T="L", mix_C=True, K_C=3, seed=15, **FULL)
    check_graph_scan_against_reference(_triton(chunk=chunk, backward=backward), inputs)


def test_register_cap_env(monkeypatch):
    """SSM_KERNELS_GRAPH_SCAN_MAXNREG_FWD/_BWD: validated; a ptxas option, so the interpreter runs uncapped."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_MAXNREG_BWD", "300")
    with pytest.raises(ValueError, match="MAXNREG_BWD=300"):
        gst._tuning(32, 16, True)
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_MAXNREG_BWD", "128")
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_MAXNREG_FWD", "128")
    assert "maxnreg" not in gst._tuning(32, 16, True)
    inputs = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=5, K=2, T="L", mix_C=True, seed=16, **FULL)
    check_graph_scan_against_reference(_triton(chunk=2), inputs)


@pytest.mark.parametrize("backward", ["split", "fused"])
def test_triton_atomic_partials(monkeypatch, backward):
    """Large partial buffers switch B, C and per-step mix gradients to atomics: same results."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setattr(gst, "_ATOMIC_BYTES", 0)
    inputs = make_graph_scan_inputs(batch=2, V=3, D=5, N=4, L=7, K=2, T="L", mix_C=True, T_C="L", seed=12, **FULL)
    check_graph_scan_against_reference(_triton(chunk=3, backward=backward), inputs)


@pytest.mark.parametrize("chunk", [3, 7], ids=["recompute", "all_states"])
@pytest.mark.parametrize("atomic", [False, True], ids=["partials", "atomics"])
def test_split_shared_mix_and_strided_d_out(monkeypatch, atomic, chunk):
    """Split backward, TGMamba's call: mix_C is mix_A, d_out a strided view; both uses add into one buffer."""
    import ssm_kernels.graph_scan.triton as gst

    if atomic:
        monkeypatch.setattr(gst, "_ATOMIC_BYTES", 0)
    inputs = make_graph_scan_inputs(batch=2, V=3, D=5, N=4, L=7, K=2, T="L", mix_C=True, K_C=2, T_C="L", seed=17,
                                    **FULL)  # fmt: skip
    check_graph_scan_against_reference(_triton(chunk=chunk, backward="split"), inputs, shared_mix=True,
                                       strided_d_out=True)  # fmt: skip


def test_split_db_partials_per_chunk(monkeypatch):
    """Split backward: when dB's per-channel-block partials over all steps would exceed _ATOMIC_BYTES but a chunk's
    fit, they are kept per chunk and summed after each chunk (no atomics, so still deterministic)."""
    import ssm_kernels.graph_scan.triton as gst

    batch, V, D, N, L, chunk = 2, 3, 5, 4, 7, 3
    parts = -(-D // gst._block_d(batch, D, 16, 16, gst._MAX_TILE_FWD, torch.device("cpu"), None))
    monkeypatch.setattr(gst, "_ATOMIC_BYTES", batch * V * N * 4 * parts * chunk)  # one chunk fits, L steps do not
    monkeypatch.setattr(gst, "_bc_partials", lambda *a, **k: pytest.fail("dB should use per-chunk partials"))
    inputs = make_graph_scan_inputs(batch=batch, V=V, D=D, N=N, L=L, K=2, T="L", mix_C=True, K_C=2, T_C="L", seed=18,
                                    **FULL)  # fmt: skip
    check_graph_scan_against_reference(_triton(chunk=chunk, backward="split"), inputs, shared_mix=True)


@pytest.mark.parametrize("atomic", [False, True], ids=["partials", "atomics"])
def test_triton_shared_mix_and_strided_d_out(monkeypatch, atomic):
    """Fused backward: mix_C is mix_A (TGMamba's readout) and a non-contiguous d_out (read in place, no copy).

    With atomic accumulation both uses add into one gradient buffer; with per-program partials they stay
    separate and autograd sums them. The gradient of the shared tensor must equal the reference's either way.
    """
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_BWD", "fused")
    import ssm_kernels.graph_scan.triton as gst

    if atomic:
        monkeypatch.setattr(gst, "_ATOMIC_BYTES", 0)
    allocs = []
    real_zeros = torch.zeros
    monkeypatch.setattr(gst.torch, "zeros", lambda *a, **k: allocs.append(a) or real_zeros(*a, **k))
    seen = []
    real_bwd = gst._bwd
    monkeypatch.setattr(gst, "_bwd", lambda dout, *a, **k: seen.append(dout.is_contiguous()) or real_bwd(dout, *a, **k))
    inputs = make_graph_scan_inputs(batch=2, V=3, D=5, N=4, L=7, K=2, T="L", mix_C=True, K_C=2, T_C="L", seed=17,
                                    **FULL)  # fmt: skip
    check_graph_scan_against_reference(_triton(chunk=3), inputs, shared_mix=True, strided_d_out=True)
    assert seen == [False], "d_out should reach the backward as the strided view"
    mix_shape = tuple(inputs["mix_A"].shape)
    mix_bufs = [a for a in allocs if tuple(a[1:]) == mix_shape]
    assert len(mix_bufs) == (1 if atomic else 0), f"mix gradient buffers allocated with zeros: {mix_bufs}"


def test_triton_only_last_state_used():
    """Gradients that flow only through last_state (out unused: its cotangent is None)."""
    inputs = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=6, K=2, T="1", mix_C=True, seed=13, **FULL)
    check_graph_scan_against_reference(_triton(chunk=4), inputs, use_out=False)


def test_interface_dispatches_to_triton(monkeypatch):
    import ssm_kernels.graph_scan.triton as gst
    from ssm_kernels import graph_selective_scan_fn

    calls = []
    real = gst._apply
    monkeypatch.setattr(gst, "_apply", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    inputs = make_graph_scan_inputs(batch=1, V=3, D=3, N=4, L=4, K=1, T="L", with_D=True, seed=14)
    check_graph_scan_against_reference(graph_selective_scan_fn, inputs)
    check_graph_scan_against_reference(graph_selective_scan_fn, inputs, grads=False)  # no checkpoints stored
    assert len(calls) == 2
    out = graph_selective_scan_fn(**inputs)
    assert isinstance(out, torch.Tensor) and out.shape == inputs["u"].shape


def test_split_chunk_sizes(monkeypatch):
    """Split backward chunking on a GPU: every state kept when they fit, else chunks whose scratch takes about
    _SPLIT_CHUNK_BYTES."""
    from types import SimpleNamespace

    import ssm_kernels.graph_scan.triton as gst

    def fake(batch, V, D, L):
        return SimpleNamespace(shape=(batch, V, D, L), device=torch.device("cuda"))

    step = 256 * 19 * 64 * 16 * 4  # bytes of one step's states at the TUSZ shape
    assert gst._split_chunk(fake(256, 19, 64, 10), 16, None) == 10  # 11 steps of states fit: all kept
    raw_step = 16 * 19 * 64 * 16 * 4
    # TGMamba's raw call: one stored operator, so states, dP, work and its mix_k H per step (67 steps)
    assert gst._split_chunk(fake(16, 19, 64, 2000), 16, None) == gst._SPLIT_CHUNK_BYTES // (4 * raw_step) == 67
    assert gst._split_chunk(fake(16, 19, 64, 2000), 16, None, K_A=3) == gst._SPLIT_CHUNK_BYTES // (9 * raw_step)
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OPGRAD", "cublas")  # nothing stored for the operator gradients
    assert gst._split_chunk(fake(16, 19, 64, 2000), 16, None, K_A=3) == gst._SPLIT_CHUNK_BYTES // (3 * raw_step)
    monkeypatch.delenv("SSM_KERNELS_GRAPH_SCAN_OPGRAD")
    monkeypatch.setattr(gst, "_SPLIT_STATES_BYTES", 10 * step)  # 11 steps no longer fit
    monkeypatch.setattr(gst, "_SPLIT_CHUNK_BYTES", 12 * step)
    assert gst._split_chunk(fake(256, 19, 64, 10), 16, None) == 3
    monkeypatch.setattr(gst, "_SPLIT_CHUNK_BYTES", step // 2)  # never fewer than one step
    assert gst._split_chunk(fake(256, 19, 64, 10), 16, None) == 1
    assert gst._split_chunk(fake(256, 19, 64, 10), 16, 40) == 10  # an override is capped at L
    assert gst._split_chunk(SimpleNamespace(shape=(2, 3, 3, 37), device=torch.device("cpu")), 4, None) == 8


@pytest.mark.parametrize("backward", ["split", "fused"])
@pytest.mark.parametrize(
    "K,K_C,T_C,shared", [(2, 2, "L", True), (2, 3, "1", False), (1, 2, "L", False)], ids=["K2-shared", "K2-KC3", "K1"]
)
def test_implicit_identity_first_operator(backward, K, K_C, T_C, shared):
    """W with one operator more than mix (GraphConv / ChebConv without a stored identity): the kernels skip that
    operator's vertex products (split) or store it (fused); outputs and every gradient against the reference.
    K 1 leaves mix_A with no operator at all."""
    inputs = make_graph_scan_inputs(batch=2, V=5, D=3, N=6, L=7, K=K, T="L", mix_C=True, K_C=K_C if not shared else K,
                                    T_C=T_C if not shared else "L", seed=20, identity_first=True, **FULL)  # fmt: skip
    check_graph_scan_against_reference(_triton(chunk=3, backward=backward), inputs, shared_mix=shared)


@pytest.mark.parametrize("backward", ["split", "fused"])
def test_manual_three_tf32_precision(monkeypatch, backward):
    """SSM_KERNELS_GRAPH_SCAN_PRECISION=3xtf32: every dot as three tf32 products of operands split by bit masking
    (hi + lo); the interpreter checks the splitting and the sum of the three products."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_PRECISION", "3xtf32")
    assert gst._precision(torch.float32) == "3xtf32"
    inputs = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=6, K=2, T="L", mix_C=True, K_C=2, T_C="L", seed=21,
                                    identity_first=True, **FULL)  # fmt: skip
    check_graph_scan_against_reference(_triton(chunk=4, backward=backward), inputs)


STORED_CASES = {
    # id: (factory kwargs, triton kwargs, check kwargs, readout mode of the backward)
    "TL-K2-recompute": (dict(V=3, D=3, N=4, L=11, K=2, T="L", **FULL), dict(chunk=4), {}, None),
    "T1-K3-identity_first": (dict(V=5, D=5, N=7, L=6, K=3, T="1", identity_first=True, with_z=True),
                             dict(chunk=4), {}, None),
    "TL-mixC-shared-identity_first-q": (
        dict(V=3, D=5, N=4, L=9, K=2, T="L", mix_C=True, K_C=2, T_C="L", identity_first=True, **FULL),
        dict(chunk=4), dict(shared_mix=True, strided_d_out=True), "q"),
    "TL-mixC-K1-parallel": (
        dict(V=4, D=3, N=5, L=7, K=1, T="L", mix_C=True, K_C=1, T_C="L", **FULL), dict(chunk=3), {}, "parallel"),
    "TL-mixC-K1-inline": (
        dict(V=4, D=3, N=5, L=7, K=1, T="L", mix_C=True, K_C=1, T_C="L", **FULL), dict(chunk=3), {}, "inline"),
    "bf16-TL-K1": (dict(V=4, D=3, N=5, L=7, K=1, T="L", with_z=True, softplus=True, dtype=torch.bfloat16),
                   dict(chunk=3), {}, None),
}  # fmt: skip


@pytest.mark.parametrize("dw", ["kernel", "bmm"])
@pytest.mark.parametrize("case", list(STORED_CASES), ids=list(STORED_CASES))
def test_stored_operator_operands(monkeypatch, case, dw):
    """``SSM_KERNELS_GRAPH_SCAN_OPGRAD=stored`` (the default, set here explicitly): the recompute keeps
    ``mix_k @ H_{t-1}`` and the adjoint ``dP W_k^T`` (in the readout adjoint's buffer for one operator, each slot read
    before it is overwritten), and the products use them: every gradient against the reference (per-step
    and shared operators, K 1-3, the implicit identity, mix_C sharing mix_A, each readout mode, bf16). Both
    sequential kernels are launched with their stores on, per chunk; dW_A from ``_graph_scan_dw_kernel`` once per
    chunk (``SSM_KERNELS_GRAPH_SCAN_DW=kernel``, the default; its rows span several programs and partial row blocks)
    or from batched cuBLAS products (``bmm``); per-step operators' dmix_A likewise from ``_graph_scan_dmix_kernel``
    (``SSM_KERNELS_GRAPH_SCAN_DMIX=kernel``, the default) or ``baddbmm_`` (``bmm``)."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OPGRAD", "stored")
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_DW", dw)
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_DMIX", dw)
    factory, extra, check, readout = STORED_CASES[case]
    if readout is not None:
        monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_BWD", readout)
    launches = _record_launches(monkeypatch, gst)
    inputs = make_graph_scan_inputs(batch=2, seed=47, **factory)
    check_graph_scan_against_reference(_triton(**extra, backward="split"), inputs, **check)
    stores = [(kernel, bool(meta.get("STORE_X")), bool(meta.get("STORE_Z"))) for kernel, meta in launches]
    chunks = -(-factory["L"] // extra["chunk"])
    assert stores.count((gst._graph_scan_fwd_kernel, True, False)) == chunks
    assert stores.count((gst._graph_scan_adj_chain_kernel, False, True)) == chunks  # the (lean) adjoint's chain
    assert _kernels(launches).count(gst._graph_scan_dw_kernel) == (chunks if dw == "kernel" else 0)
    dmix = _kernels(launches).count(gst._graph_scan_dmix_kernel)  # one per chunk and stored operator
    assert dmix >= chunks if dw == "kernel" and factory["T"] == "L" else dmix == 0


LEAN_CASES = {
    # id: (factory kwargs, triton kwargs, check kwargs, readout mode of the backward, channel groups asked for, and
    # launched where fewer: D 5 in 4 groups of 2 channels is 3 groups)
    "all_options-q-shared-strided": (
        dict(V=3, D=5, N=4, L=9, K=2, T="L", mix_C=True, K_C=2, T_C="L", identity_first=True, **FULL), dict(chunk=4),
        dict(shared_mix=True, strided_d_out=True), "q", 2),
    "mixC_K3_T1-parallel-one_group": (dict(V=3, D=3, N=4, L=10, K=2, T="L", mix_C=True, K_C=3, T_C="1", **FULL),
                                      dict(chunk=4), {}, "parallel", 1),
    "mixC-inline": (dict(V=3, D=5, N=4, L=7, K=2, T="L", mix_C=True, K_C=2, T_C="L", **FULL), dict(chunk=3), {},
                    "inline", 2),
    "no_mixC-z-init-all_states": (dict(V=4, D=3, N=5, L=6, K=1, T="1", with_z=True, with_initial_state=True),
                                  dict(chunk=6), {}, None, 2),
    "no_mixC-plain-L1-one_group": (dict(V=5, D=3, N=7, L=1, K=3, T="1"), dict(chunk=4), {}, None, 1),
    "D5-groups4-of-2": (dict(V=3, D=5, N=4, L=5, K=1, T="L", mix_C=True, **FULL), dict(chunk=5), {}, "q", (4, 3)),
    "bf16-mixC-softplus": (dict(V=3, D=3, N=4, L=6, K=2, T="L", mix_C=True, with_z=True, softplus=True,
                                dtype=torch.bfloat16), dict(chunk=4), {}, "q", 2),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LEAN_CASES), ids=list(LEAN_CASES))
def test_lean_adjoint(monkeypatch, case):
    """``SSM_KERNELS_GRAPH_SCAN_ADJ=lean``: per chunk, ``_graph_scan_adj_chain_kernel`` carries the adjoint recurrence
    alone and ``_graph_scan_adj_grads_kernel`` forms the element-wise gradients and dP afterwards, its programs
    taking blocks of two steps (so dA, dD and d delta_bias sum over several sets of partial slots) and one or two
    groups of channels (dB written straight, or per group and chunk and summed), one channel per tile (each program
    loops over its channels). Every gradient against the reference with each readout mode (the readout's adjoint
    loaded, or formed in the chain from dy, or dy (x) C without readout operators), recomputed chunks and every state
    kept, an initial state, shared operators and a strided d_out, bf16. The groups of two or three channels take
    that many channel blocks (dB added to at the later ones); groups that would be empty are not launched."""
    import ssm_kernels.graph_scan.triton as gst

    factory, extra, check, readout, groups = LEAN_CASES[case]
    asked, groups = groups if isinstance(groups, tuple) else (groups, groups)
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_ADJ", "lean")
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_LEAN_GROUPS", str(asked))
    grads_kernel = gst._graph_scan_adj_grads_kernel
    if readout is not None:
        monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_BWD", readout)
    grads_grids = []
    real_fast = gst.fast

    class Recorded:  # the element-wise kernel is launched directly (it has no dots to fall back from)
        def __getitem__(self, grid):
            grads_grids.append(grid)
            return real_fast(grads_kernel)[grid]

    monkeypatch.setattr(gst, "fast", lambda k: Recorded() if k is grads_kernel else real_fast(k))
    launches = _record_launches(monkeypatch, gst)
    inputs = make_graph_scan_inputs(batch=2, seed=53, **factory)
    check_graph_scan_against_reference(_triton(**extra, backward="split"), inputs, **check)
    L, chunk = factory["L"], extra["chunk"]
    chunks = -(-L // min(chunk, L))
    assert _kernels(launches).count(gst._graph_scan_adj_chain_kernel) == chunks
    assert gst._graph_scan_adj_kernel not in _kernels(launches)
    steps = [min(chunk, L - c * chunk) for c in reversed(range(chunks))]
    assert grads_grids == [(2, -(-n // 2), groups) for n in steps]


def test_adj_mode_env_checked(monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_ADJ", "fast")
    inputs = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=5, K=1, T="1", seed=54)
    with pytest.raises(ValueError, match="SSM_KERNELS_GRAPH_SCAN_ADJ='fast'"):
        check_graph_scan_against_reference(_triton(chunk=4, backward="split"), inputs)


def test_dw_kernel_falls_back_past_four_operators(monkeypatch):
    """``_graph_scan_dw_kernel`` sums at most four operators' dW_A; with five (four stored after the implicit
    identity) the stored operands go to the batched cuBLAS products instead. Every gradient against the reference."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OPGRAD", "stored")
    launches = _record_launches(monkeypatch, gst)
    inputs = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=7, K=5, T="L", identity_first=True, seed=52, **FULL)
    assert inputs["W_A"].shape[0] == 5
    check_graph_scan_against_reference(_triton(chunk=3, backward="split"), inputs)
    assert any(meta.get("STORE_X") for _, meta in launches)
    assert gst._graph_scan_dw_kernel not in _kernels(launches)


def test_cublas_operator_operands_store_nothing(monkeypatch):
    """``SSM_KERNELS_GRAPH_SCAN_OPGRAD=cublas``: the cuBLAS products form their operands themselves, and no kernel
    stores them."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OPGRAD", "cublas")
    launches = _record_launches(monkeypatch, gst)
    inputs = make_graph_scan_inputs(batch=2, V=3, D=3, N=4, L=5, K=2, T="L", seed=48, **FULL)
    check_graph_scan_against_reference(_triton(chunk=2, backward="split"), inputs)
    assert not any(meta.get("STORE_X") or meta.get("STORE_Z") for _, meta in launches)
    assert gst._graph_scan_dw_kernel not in _kernels(launches)


KEPT_CASES = {
    # id: (factory kwargs, check kwargs)
    "TL-K2-mixC": (dict(V=3, D=3, N=4, L=5, K=2, T="L", mix_C=True, K_C=1, T_C="L", seed=48, **FULL), {}),
    "TGMamba-like-shared": (
        dict(V=3, D=5, N=4, L=6, K=1, T="L", mix_C=True, K_C=1, T_C="L", identity_first=True, seed=49, **FULL),
        dict(shared_mix=True)),
    "T1-K3-bf16": (dict(V=4, D=3, N=5, L=4, K=3, T="1", with_z=True, dtype=torch.bfloat16, seed=50), {}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(KEPT_CASES), ids=list(KEPT_CASES))
def test_stored_operator_operands_kept_by_forward(monkeypatch, case):
    """Every state kept by the forward (no recompute: the TUSZ shape): the forward kernel also keeps
    ``X_k = mix_k H_{t-1}`` for the backward, in the same launch as the states, and the adjoint stores
    ``dP W_k^T``; every gradient against the reference. Where no state operator's gradient is wanted, the forward
    keeps no X."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OPGRAD", "stored")
    factory, check = KEPT_CASES[case]
    launches = _record_launches(monkeypatch, gst)
    inputs = make_graph_scan_inputs(batch=2, **factory)
    check_graph_scan_against_reference(_triton(chunk=factory["L"], backward="split"), inputs, **check)
    stores = [(kernel, bool(meta.get("STORE_STATES")), bool(meta.get("STORE_X"))) for kernel, meta in launches]
    assert stores.count((gst._graph_scan_fwd_kernel, True, True)) == 1  # one forward launch, states and X
    assert [meta.get("STORE_Z") for kernel, meta in launches if kernel is gst._graph_scan_adj_chain_kernel] == [True]
    assert _kernels(launches).count(gst._graph_scan_dw_kernel) == 1

    launches.clear()
    frozen = make_graph_scan_inputs(batch=2, requires_grad=True, **factory)
    for name in ("mix_A", "W_A", "mix_C", "W_C"):
        if frozen.get(name) is not None:
            frozen[name] = frozen[name].detach()
    _triton(chunk=factory["L"], backward="split")(**frozen).float().square().sum().backward()
    assert frozen["u"].grad is not None
    assert not any(meta.get("STORE_X") or meta.get("STORE_Z") for _, meta in launches)


def test_kept_operands_within_the_states_budget(monkeypatch):
    """The forward keeps the vertex products only where they (and the backward's ``dP W_k^T`` for more than one
    operator) fit ``_SPLIT_STATES_BYTES``; past it the cuBLAS products form their operands, and nothing stores."""
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OPGRAD", "stored")
    factory = dict(V=3, D=3, N=4, L=5, K=2, T="L", seed=51, **FULL)
    step = 2 * 3 * 3 * 4 * 4  # one (batch, V, D, N) fp32 tensor
    assert gst._keeps_operands(True, 2, 5, step) and not gst._keeps_operands(False, 2, 5, step)
    monkeypatch.setattr(gst, "_SPLIT_STATES_BYTES", 2 * 2 * 5 * step - 1)  # two operators: X and dP W^T each
    assert not gst._keeps_operands(True, 2, 5, step) and gst._keeps_operands(True, 1, 5, step)
    launches = _record_launches(monkeypatch, gst)
    inputs = make_graph_scan_inputs(batch=2, **factory)
    check_graph_scan_against_reference(_triton(chunk=5, backward="split"), inputs)
    assert not any(meta.get("STORE_X") or meta.get("STORE_Z") for _, meta in launches)
    assert gst._graph_scan_dw_kernel not in _kernels(launches)


READOUT_Q_CASES = {
    # id: (factory kwargs, triton kwargs, check kwargs, Q formed in the kernel)
    "TGMamba-like-recompute": (
        dict(V=3, D=5, N=4, L=9, K=2, T="L", mix_C=True, K_C=2, T_C="L", identity_first=True, **FULL),
        dict(chunk=4), dict(shared_mix=True, strided_d_out=True), True),
    "K_C3-T1-all_states": (dict(V=4, D=3, N=5, L=6, K=1, T="L", mix_C=True, K_C=3, T_C="1", with_z=True),
                           dict(chunk=6), {}, True),
    "bf16-K_C1": (dict(V=5, D=3, N=7, L=7, K=1, T="L", mix_C=True, K_C=1, T_C="L", with_z=True, with_D=True,
                       dtype=torch.bfloat16), dict(chunk=3), {}, True),
    # D 70: two 64-channel programs per step, so the product stays in cuBLAS
    "D70-two_channel_blocks": (dict(V=3, D=70, N=4, L=3, K=1, T="1", mix_C=True, K_C=1, T_C="1"), dict(chunk=2),
                               {}, False),
}  # fmt: skip


@pytest.mark.parametrize("mode", ["kernel", "fused", "bmm"])
@pytest.mark.parametrize("case", list(READOUT_Q_CASES), ids=list(READOUT_Q_CASES))
def test_readout_q_in_kernel(monkeypatch, case, mode):
    """``SSM_KERNELS_GRAPH_SCAN_READOUT_Q``: the readout gradients' Q formed and contracted in the folded readout's
    adjoint kernel (``fused``, the default), stored by it (``kernel``) or from a permuted copy of the states and a
    batched product (``bmm``): every gradient
    against the reference (shared and separate readout operators, K_C 1-3, the implicit identity, recomputed
    chunks and every state kept, bf16), one launch per chunk, with the product where asked; with more channels
    than one program holds, the cuBLAS form."""
    import ssm_kernels.graph_scan.triton as gst

    factory, extra, check, in_kernel = READOUT_Q_CASES[case]
    if mode == "bmm" and not in_kernel:
        pytest.skip("the cuBLAS form either way")
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_Q", mode)
    launches = _record_launches(monkeypatch, gst)
    inputs = make_graph_scan_inputs(batch=2, seed=49, **factory)
    check_graph_scan_against_reference(_triton(**extra, backward="split"), inputs, **check)
    flags = [(meta["STORE_Q"], meta["FUSE_Q"]) for kernel, meta in launches
             if kernel is gst._graph_scan_readout_adj_q_kernel]  # fmt: skip
    assert flags == [(in_kernel and mode == "kernel", in_kernel and mode == "fused")] * -(
        -factory["L"] // extra["chunk"]
    )


def test_readout_q_env_checked(monkeypatch):
    import ssm_kernels.graph_scan.triton as gst

    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_READOUT_Q", "cuda")
    with pytest.raises(ValueError, match="SSM_KERNELS_GRAPH_SCAN_READOUT_Q"):
        gst._readout_q_mode()


def test_opgrad_env_checked(monkeypatch):
    import ssm_kernels.graph_scan.triton as gst

    for value in ("cuda", "triton"):  # (triton: the per-(step, batch) kernel, dropped in run27)
        monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_OPGRAD", value)
        with pytest.raises(ValueError, match="SSM_KERNELS_GRAPH_SCAN_OPGRAD"):
            gst._opgrad_mode()
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_DW", "cublas")
    with pytest.raises(ValueError, match="SSM_KERNELS_GRAPH_SCAN_DW"):
        gst._dw_mode()
