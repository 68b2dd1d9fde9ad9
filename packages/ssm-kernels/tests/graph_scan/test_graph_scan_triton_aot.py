"""Ahead-of-time compile of the graph-scan kernels for sm_90 (no GPU needed): resources fit an H100/H200.

Guards against configurations that cannot launch (shared memory above 227 KB per block, which
the fully unrolled K loop once reached at V = N = 64). Slow (ptxas): marked ``slow``.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

SM90_SMEM = 232448  # bytes of shared memory one block may use on sm_90


def _compile(
    kind: str,
    VP: int,
    BD: int,
    NP: int,
    K: int,
    mixc: bool,
    warps: int,
    prec: str,
    unroll: bool = False,
    all_states: bool = False,
    eye: bool = False,
    readout_in: bool = False,
    stored: bool = False,
    fused: bool = False,
):
    triton = pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:
        pytest.skip("this triton has no ahead-of-time compile API")
    import ssm_kernels.graph_scan.triton as gst

    fn = {
        "fwd": gst._graph_scan_fwd_kernel, "bwd": gst._graph_scan_bwd_kernel, "adj": gst._graph_scan_adj_kernel,
        "readout": gst._graph_scan_readout_kernel, "readout_adj": gst._graph_scan_readout_adj_kernel,
        "readout_q": gst._graph_scan_readout_q_kernel, "readout_adj_q": gst._graph_scan_readout_adj_q_kernel,
        "dw": gst._graph_scan_dw_kernel, "dmix": gst._graph_scan_dmix_kernel,
        "chain": gst._graph_scan_adj_chain_kernel, "grads": gst._graph_scan_adj_grads_kernel,
    }[kind]  # fmt: skip
    const = dict(K_A=K, K_C=K if mixc else 1, HAS_MIXC=mixc, HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True,
                 VP=VP, BD=BD, NP=NP, PREC=prec, UNROLL=unroll)  # fmt: skip
    if kind in ("fwd", "bwd"):
        const["CHUNK"] = 1 if all_states else 32
    if kind == "fwd":  # every store on: the training forward of either backward design; loads prefetched
        const.update(HAS_INIT=True, STORE_LAST=True, STORE_CKPT=True, STORE_OUT=True, STORE_STATES=True, STORE_Y=True,
                     EYE_A=eye, EYE_C=eye and mixc, PREFETCH=True, STORE_X=stored)  # fmt: skip
    elif kind == "adj":  # the split backward's adjoint kernel, as launched (loads prefetched)
        const.update(BC_ATOMIC=False, EYE_A=eye, EYE_C=eye and mixc, STORE_DY=not readout_in, PREFETCH=True,
                     READOUT_IN=readout_in, STORE_Z=stored)  # fmt: skip
    elif kind == "chain":  # the lean adjoint's recurrence (SSM_KERNELS_GRAPH_SCAN_ADJ=lean, the default)
        const = {k: v for k, v in const.items() if k in fn.arg_names}
        const.update(EYE_A=eye, EYE_C=eye and mixc, PREFETCH=True, READOUT_IN=readout_in, STORE_Z=stored)
    elif kind == "grads":  # its element-wise gradients: (TT, BD, NP) tiles of one vertex (VP unused), 8 steps
        const = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, TT=8, BD=BD, NP=NP, STORE_DY=True)
    elif kind == "dmix":  # the stored operands' per-step dmix_A (SSM_KERNELS_GRAPH_SCAN_DMIX=kernel): BD is its block
        const = dict(VP=VP, BC=BD, PREC=prec)
    elif kind == "dw":  # the stored operands' dW_A (SSM_KERNELS_GRAPH_SCAN_DW=kernel): BD is its rows per block
        const = dict(KW=K + eye, EYE=eye, NP=NP, BM=BD, PREC=prec)
    elif kind.startswith("readout"):  # the parallel readout kernels
        const = {k: v for k, v in const.items() if k in fn.arg_names}
        const.update(EYE_C=eye)
        if kind.endswith("_q"):  # the folded ones: the stored readout operators, and their count to a power of 2
            const.update(KW=const["K_C"] + eye, KWP=triton.next_power_of_2(const["K_C"] + eye))
        if kind.startswith("readout_q") or kind == "readout":
            const.update(STORE_OUT=True, STORE_Y=True)
        if kind == "readout_adj_q":  # the readout gradients' Q (SSM_KERNELS_GRAPH_SCAN_READOUT_Q): stored: kept,
            const.update(STORE_Q=stored, FUSE_Q=fused, MIX_GRAD=fused)  # fused: contracted into R and dmix_C
    else:
        const.update(HAS_DLAST=True, MA_MODE=1, MC_MODE=2, BC_ATOMIC=False, KPA=triton.next_power_of_2(K),
                     KPC=triton.next_power_of_2(K if mixc else 1), ALL_STATES=all_states)  # fmt: skip
    half = {"u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "out_ptr", "du_ptr", "ddelta_ptr", "dz_ptr", "dout_ptr"}
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in const]
    assert not missing, f"constexprs left to the signature (compiled as runtime ints): {missing}"
    sig = {
        n: "constexpr" if n in const else ("*bf16" if n in half else "*fp32") if n.endswith("_ptr") else "i32"
        for n in fn.arg_names
    }
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    try:
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    except Exception as exc:  # a toolchain without the NVIDIA backend / ptxas
        if "ptxas" in str(exc).lower() or "backend" in str(exc).lower():
            pytest.skip(f"cannot compile for sm_90 here: {exc}")
        raise


@pytest.mark.parametrize(
    "kind,VP,BD,NP,K,mixc,warps,prec,unroll,all_states,eye",
    [
        ("fwd", 32, 8, 16, 2, False, 8, "tf32x3", True, False, False),  # TUSZ defaults (V 19, N 16)
        ("bwd", 32, 4, 16, 2, True, 8, "tf32x3", True, True, False),
        ("bwd", 32, 4, 16, 2, True, 8, "tf32x3", True, False, False),
        ("adj", 32, 8, 16, 2, True, 8, "tf32x3", True, False, False),
        ("fwd", 64, 1, 64, 3, True, 8, "tf32", False, False, False),  # the largest supported sizes
        ("bwd", 64, 1, 64, 3, True, 8, "tf32", False, False, False),
        ("adj", 64, 1, 64, 3, True, 8, "tf32", False, False, False),
        # TGMamba's graphconv call with the implicit identity first (one stored operator per side)
        ("fwd", 32, 8, 16, 1, True, 8, "tf32x3", True, False, True),
        ("adj", 32, 8, 16, 1, True, 8, "tf32x3", True, False, True),
        ("fwd", 32, 8, 16, 1, True, 8, "3xtf32", True, False, True),  # the manual three-tf32 precision
        ("adj", 32, 8, 16, 1, True, 8, "3xtf32", True, False, True),
        ("fwd", 64, 1, 64, 2, True, 8, "tf32", False, False, True),
        ("adj", 64, 1, 64, 2, True, 8, "tf32", False, False, True),
        # the parallel readout (SSM_KERNELS_GRAPH_SCAN_READOUT_FWD / _BWD=parallel) at TGMamba's call
        ("readout", 32, 8, 16, 1, True, 8, "3xtf32", True, False, True),
        ("readout_adj", 32, 8, 16, 1, True, 8, "3xtf32", True, False, True),
        ("adj-readout_in", 32, 8, 16, 1, True, 8, "3xtf32", True, False, True),
        ("readout", 64, 1, 64, 3, True, 8, "tf32", False, False, False),
        ("readout_adj", 64, 1, 64, 3, True, 8, "tf32", False, False, False),
        # the folded readout (_READOUT_FWD / _BWD=q), all 64 channels per program
        ("readout_q", 32, 64, 16, 1, True, 4, "3xtf32", False, False, True),
        ("readout_adj_q", 32, 64, 16, 1, True, 4, "3xtf32", False, False, True),
        ("readout_q", 64, 64, 64, 3, True, 8, "tf32", False, False, False),
        ("readout_adj_q", 64, 64, 64, 3, True, 8, "tf32", False, False, False),
        ("dw", 32, 128, 16, 1, False, 4, "3xtf32", False, False, True),  # TGMamba's call, as launched
        ("dw", 32, 128, 16, 1, False, 4, "tf32", False, False, True),
        ("dw", 64, 32, 64, 3, False, 4, "3xtf32", False, False, True),  # four operators, N 64 (rows as launched)
        ("dmix", 32, 64, 16, 1, False, 4, "3xtf32", False, False, True),  # TGMamba's call, as launched
        ("dmix", 64, 64, 64, 1, False, 4, "tf32x3", False, False, False),  # V 64, Triton's own three-product dot
        # SSM_KERNELS_GRAPH_SCAN_OPGRAD=stored (the default): the recompute and the adjoint keep their products'
        # operands for the operator gradients
        ("fwd-stored", 32, 8, 16, 1, True, 8, "3xtf32", True, False, True),
        ("adj-readout_in-stored", 32, 8, 16, 1, True, 8, "3xtf32", True, False, True),
        ("fwd-stored", 64, 1, 64, 3, True, 8, "tf32", False, False, False),
        ("adj-stored", 64, 1, 64, 3, True, 8, "tf32", False, False, False),
        ("readout_adj_q-stored", 32, 64, 16, 1, True, 4, "3xtf32", False, False, True),
        ("readout_adj_q-stored", 64, 64, 64, 3, True, 8, "tf32", False, False, False),
        # SSM_KERNELS_GRAPH_SCAN_READOUT_Q=fused: Q contracted in the program
        ("readout_adj_q-fused", 32, 64, 16, 1, True, 4, "3xtf32", False, False, True),
        ("readout_adj_q-fused", 32, 64, 16, 1, True, 8, "3xtf32", False, False, True),
        ("readout_adj_q-fused", 64, 64, 64, 3, True, 8, "tf32", False, False, False),
        # SSM_KERNELS_GRAPH_SCAN_ADJ=lean (the default): the chain at TGMamba's call as launched (4 channels, 4
        # warps) and the largest sizes with the readout's adjoint formed in it; the element-wise kernel's tiles
        ("chain-readout_in-stored", 32, 4, 16, 1, True, 4, "3xtf32", True, False, True),
        ("chain-readout_in-stored", 32, 8, 16, 1, True, 8, "tf32", True, False, True),
        ("chain-stored", 64, 1, 64, 3, True, 8, "tf32", False, False, False),
        ("grads", 32, 32, 16, 1, True, 8, "3xtf32", False, False, True),
        ("grads", 32, 16, 16, 1, True, 4, "3xtf32", False, False, True),
        ("grads", 64, 8, 64, 3, True, 8, "tf32", False, False, False),
    ],
    ids=[
        "fwd-V19N16",
        "bwd-V19N16-mixC-all_states",
        "bwd-V19N16-mixC",
        "adj-V19N16-mixC",
        "fwd-V64N64K3-mixC",
        "bwd-V64N64K3-mixC",
        "adj-V64N64K3-mixC",
        "fwd-V19N16-mixC-identity_first",
        "adj-V19N16-mixC-identity_first",
        "fwd-V19N16-mixC-identity_first-3xtf32",
        "adj-V19N16-mixC-identity_first-3xtf32",
        "fwd-V64N64K3-mixC-identity_first",
        "adj-V64N64K3-mixC-identity_first",
        "readout-V19N16-identity_first-3xtf32",
        "readout_adj-V19N16-identity_first-3xtf32",
        "adj-V19N16-readout_in-identity_first-3xtf32",
        "readout-V64N64K3",
        "readout_adj-V64N64K3",
        "readout_q-V19N16-3xtf32",
        "readout_adj_q-V19N16-3xtf32",
        "readout_q-V64N64",
        "readout_adj_q-V64N64",
        "dw-N16-identity_first-3xtf32",
        "dw-N16-identity_first-tf32",
        "dw-N64-K4-3xtf32",
        "dmix-V19N16-3xtf32",
        "dmix-V64-tf32x3",
        "fwd-stored-V19N16-identity_first-3xtf32",
        "adj-readout_in-stored-V19N16-identity_first-3xtf32",
        "fwd-stored-V64N64K3-mixC",
        "adj-stored-V64N64K3-mixC",
        "readout_adj_q-with_Q-V19N16-3xtf32",
        "readout_adj_q-with_Q-V64N64",
        "readout_adj_q-fused-V19N16-3xtf32",
        "readout_adj_q-fused-V19N16-3xtf32-8warps",
        "readout_adj_q-fused-V64N64",
        "chain-readout_in-stored-V19N16-identity_first-3xtf32",
        "chain-readout_in-stored-V19N16-identity_first-tf32-BD8",
        "chain-stored-V64N64K3-mixC",
        "grads-N16-BD32",
        "grads-N16-BD16-4warps",
        "grads-N64-BD8",
    ],  # fmt: skip
)
def test_kernels_fit_sm90(kind, VP, BD, NP, K, mixc, warps, prec, unroll, all_states, eye):
    stored = kind.endswith("-stored")
    fused = kind.endswith("-fused")
    kind = kind.removesuffix("-stored").removesuffix("-fused")
    readout_in = kind.endswith("-readout_in")
    kind = kind.removesuffix("-readout_in")
    kernel = _compile(kind, VP, BD, NP, K, mixc, warps, prec, unroll, all_states, eye, readout_in, stored, fused)
    assert kernel.metadata.shared <= SM90_SMEM, f"{kind}: {kernel.metadata.shared} B of shared memory"
