"""The graph scan's CUDA forward recurrence (``csrc/graph_scan_fwd.cuh``), run on the CPU through a host emulation.

``emulate/emulate_graph_scan.cpp`` compiles the kernel source with g++ (one OS thread per CUDA thread, a barrier for
``__syncthreads``, NaN-poisoned shared memory) and runs it block by block. The states it writes (every step's, the
chunk checkpoints, the last) are compared with a float64 recurrence written from the maths here, and the last state
with ``graph_selective_scan_ref``. Needs g++ with C++20 and the CUDA headers (half / bfloat16 types).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssm_kernels.graph_scan import cuda as gs_cuda
from ssm_kernels.graph_scan.reference import graph_selective_scan_ref

HERE = Path(__file__).resolve().parent
CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"

pytestmark = pytest.mark.skipif(
    shutil.which("g++") is None or not (CUDA_INCLUDE / "cuda_fp16.h").exists(),
    reason="needs g++ and the CUDA headers",
)

_I, _L, _P = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
_INTS = ("batch", "V", "D", "L", "N", "K", "eye", "softplus", "has_bias", "has_h0", "t0", "t1", "chunk", "nc", "bd")
_PTRS = ("u", "delta", "B", "A", "mix", "W", "bias", "h0", "states", "ckpt", "last")


class FwdParams(ctypes.Structure):  # gsk::FwdParams
    _fields_ = [
        *[(n, _I) for n in _INTS],
        *[(n, _L) for n in ("s_mb", "s_mt", "s_mk", "s_mi", "s_mj", "s_h0b", "s_st")],
        *[(n, _P) for n in _PTRS],
    ]


_LIB: list = []


def _lib():
    if not _LIB:
        out = Path(tempfile.mkdtemp(prefix="ssk_emu_gs_")) / "libemu_gs.so"
        cmd = ["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-Wno-unknown-pragmas", f"-I{CUDA_INCLUDE}",
               f"-I{gs_cuda.csrc_dir()}", str(HERE / "emulate" / "emulate_graph_scan.cpp"), "-o", str(out),
               "-lpthread"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        lib = ctypes.CDLL(str(out))
        lib.emu_graph_scan_fwd.argtypes = [ctypes.POINTER(FwdParams), _I, _I]
        lib.emu_graph_scan_smem_floats.argtypes = [_I] * 5
        _LIB.append(lib)
    return _LIB[0]


def _ptr(t):
    return t.data_ptr() if t is not None else None


def emulate(u, delta, A, B, mix, W, bias, softplus, h0, t0, t1, chunk, eye, bd, states=True, ckpt=True, last=True):
    """Run the kernel as csrc/graph_scan.cu launches it; returns (states, ckpt, last) (fp32, or None)."""
    batch, V, D, L = u.shape
    N, K = A.shape[1], mix.shape[2]
    nc = -(-L // chunk)
    out_states = torch.full((t1 - t0 + 1, batch, V, D, N), float("nan")) if states else None
    out_ckpt = torch.full((batch, nc, V, D, N), float("nan")) if ckpt else None
    out_last = torch.full((batch, V, D, N), float("nan")) if last else None
    A, W = A.float().contiguous(), W.float().contiguous()
    bias = bias.float().contiguous() if bias is not None else None
    p = FwdParams(batch=batch, V=V, D=D, L=L, N=N, K=K, eye=int(eye), softplus=int(softplus),
                  has_bias=int(bias is not None), has_h0=int(h0 is not None), t0=t0, t1=t1, chunk=chunk, nc=nc, bd=bd,
                  s_mb=0 if mix.shape[0] == 1 else mix.stride(0), s_mt=0 if mix.shape[1] == 1 else mix.stride(1),
                  s_mk=mix.stride(2), s_mi=mix.stride(3), s_mj=mix.stride(4),
                  s_h0b=h0.stride(0) if h0 is not None else 0, s_st=batch * V * D * N,
                  u=_ptr(u), delta=_ptr(delta), B=_ptr(B), A=_ptr(A), mix=_ptr(mix), W=_ptr(W), bias=_ptr(bias),
                  h0=_ptr(h0), states=_ptr(out_states), ckpt=_ptr(out_ckpt), last=_ptr(out_last))  # fmt: skip
    dtype = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[u.dtype]
    assert _lib().emu_graph_scan_fwd(ctypes.byref(p), dtype, int(mix.dtype == torch.float32)) == 0
    return out_states, out_ckpt, out_last


def recurrence(u, delta, A, B, mix, W, bias, softplus, h0, t0, t1, chunk, eye):
    """float64, from the maths: every state from t0 to t1, the checkpoints written in the range, the last."""
    f = lambda t: t.double() if t is not None else None
    u, delta, A, B, mix, W, bias = map(f, (u, delta, A, B, mix, W, bias))
    batch, V, D, L = u.shape
    N, K = A.shape[1], mix.shape[2]
    h = f(h0).clone() if h0 is not None else torch.zeros(batch, V, D, N, dtype=torch.float64)
    states, ckpt = [h.clone()], {}
    for t in range(t0, t1):
        if t % chunk == 0:
            ckpt[t // chunk] = h.clone()
        pre = delta[..., t] + (bias if bias is not None else 0.0)
        dt = F.softplus(pre) if softplus else pre  # (batch, V, D)
        m = mix[:, t if mix.shape[1] > 1 else 0].expand(batch, K, V, V)
        P = h @ W[0] if eye else torch.zeros_like(h)
        for k in range(K):
            P = P + torch.einsum("bij,bjdm,mn->bidn", m[:, k], h, W[k + int(eye)])
        h = P * torch.exp(dt[..., None] * A) + (dt * u[..., t])[..., None] * B[:, :, None, :, t]
        states.append(h.clone())
    return torch.stack(states), ckpt, h


def _inputs(batch, V, D, N, L, K, T, eye, dtype=torch.float32, mix_dtype=None, seed=0, h0=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    u = r(batch, V, D, L).to(dtype)
    delta = (0.5 * r(batch, V, D, L)).to(dtype)
    A = -torch.rand(D, N, generator=g) - 0.2
    B = r(batch, V, N, L).to(dtype)
    mix = (0.3 * r(batch, T, K, V, V)).to(mix_dtype or torch.float32)
    W = 0.3 * r(K + int(eye), N, N)
    bias = 0.1 * r(D)
    h = r(batch, V, D, N) if h0 else None
    return u, delta, A, B, mix, W, bias, h


CASES = {
    # id: (batch, V, D, N, L, K, T, eye, dtype, mix dtype, bd, t0, t1, chunk)
    "tgmamba-like-eye-TL": (2, 3, 5, 4, 9, 1, "L", True, torch.float32, None, 2, 0, 9, 4),
    "K2-T1-no_eye-chunked-range": (2, 3, 4, 6, 11, 2, "1", False, torch.float32, None, 4, 4, 11, 4),
    "N16-V5-bd1": (1, 5, 3, 16, 6, 1, "L", True, torch.float32, None, 1, 0, 6, 3),
    "N17-padded-to-32": (1, 2, 2, 17, 4, 1, "L", True, torch.float32, None, 2, 0, 4, 4),
    "K3-eye-V7-D3": (1, 7, 3, 8, 5, 3, "L", True, torch.float32, None, 2, 1, 5, 2),
    "bf16-inputs-bf16-mix": (2, 3, 3, 4, 7, 1, "L", True, torch.bfloat16, torch.bfloat16, 2, 0, 7, 3),
    "fp16-inputs-fp32-mix": (1, 4, 3, 4, 5, 2, "L", False, torch.float16, None, 4, 0, 5, 5),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_emulated_forward_recurrence_matches_the_maths(case):
    batch, V, D, N, L, K, T, eye, dtype, mix_dtype, bd, t0, t1, chunk = CASES[case]
    inp = _inputs(batch, V, D, N, L, K, L if T == "L" else 1, eye, dtype, mix_dtype, seed=len(case))
    u, delta, A, B, mix, W, bias, h0 = inp
    for softplus in (True, False):
        states, ckpt, last = emulate(u, delta, A, B, mix, W, bias, softplus, h0, t0, t1, chunk, eye, bd)
        ref_states, ref_ckpt, ref_last = recurrence(u, delta, A, B, mix, W, bias, softplus, h0, t0, t1, chunk, eye)
        scale = ref_states.abs().max().item()
        tol = 2e-5 * max(1.0, scale)
        assert torch.isfinite(states).all()
        torch.testing.assert_close(states.double(), ref_states, atol=tol, rtol=1e-5)
        torch.testing.assert_close(last.double(), ref_last, atol=tol, rtol=1e-5)
        for c in range(ckpt.shape[1]):  # written exactly for the chunks entered in the range, untouched (NaN) else
            if c in ref_ckpt:
                torch.testing.assert_close(ckpt[:, c].double(), ref_ckpt[c], atol=tol, rtol=1e-5)
            else:
                assert torch.isnan(ckpt[:, c]).all()


def test_emulated_last_state_equals_the_reference_op():
    """From t = 0 with no initial state the last state is graph_selective_scan_ref's (implicit identity first)."""
    u, delta, A, B, mix, W, bias, _ = _inputs(2, 4, 3, 8, 10, 2, 10, True, seed=5, h0=False)
    _, _, last = emulate(u, delta, A, B, mix, W, bias, True, None, 0, 10, 10, True, 2, states=False, ckpt=False)
    C = torch.randn(2, 4, 8, 10)
    _, ref_last = graph_selective_scan_ref(u, delta, A, B, C, mix, W, delta_bias=bias, delta_softplus=True,
                                           return_last_state=True)  # fmt: skip
    torch.testing.assert_close(last, ref_last.float(), atol=1e-4, rtol=1e-4)


def test_emulated_strided_mix_and_h0():
    """Operators read through their strides (a transposed view) and h0 rows from a batch-strided checkpoint."""
    u, delta, A, B, mix, W, bias, _ = _inputs(2, 3, 4, 4, 6, 2, 6, True, seed=9)
    mix_t = mix.transpose(3, 4).contiguous().transpose(3, 4)  # same values, other strides
    ck = torch.randn(2, 3, 3, 4, 4)  # (batch, nc, V, D, N)
    h0 = ck[:, 1]
    a = emulate(u, delta, A, B, mix_t, W, bias, True, h0, 2, 6, 2, True, 2)
    b = recurrence(u, delta, A, B, mix, W, bias, True, h0.contiguous(), 2, 6, 2, True)
    torch.testing.assert_close(a[0].double(), b[0], atol=2e-5, rtol=1e-5)


def test_smem_mirror_matches_the_kernel():
    """cuda.smem_bytes (the launcher's choice of channels per block) mirrors gsk::fwd_smem_floats."""
    lib = _lib()
    for N, V, K, eye, bd in [(4, 3, 1, 1, 2), (16, 19, 1, 1, 8), (17, 19, 3, 0, 4), (32, 64, 3, 1, 1)]:
        assert gs_cuda.smem_bytes(N, V, K, bool(eye), bd) == 4 * lib.emu_graph_scan_smem_floats(N, V, K, eye, bd)


def test_channels_per_block_respects_limits(monkeypatch):
    monkeypatch.delenv("SSM_KERNELS_GRAPH_SCAN_CUDA_BD", raising=False)
    assert gs_cuda.channels_per_block(256, 19, 64, 16, 1, True, 132) == 8  # TUSZ: enough blocks
    assert gs_cuda.channels_per_block(16, 19, 64, 16, 1, True, 132) == 4  # raw: 256 blocks
    bd = gs_cuda.channels_per_block(256, 64, 64, 32, 3, True, 132)
    assert 64 * bd <= gs_cuda.MAX_THREADS and gs_cuda.smem_bytes(32, 64, 3, True, bd) <= gs_cuda.SMEM_LIMIT
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_CUDA_BD", "2")
    assert gs_cuda.channels_per_block(256, 19, 64, 16, 1, True, 132) == 2


def test_cuda_forward_is_opt_in_and_never_tried_on_cpu(monkeypatch):
    """Off by default; on, CPU tensors still never try to build the extension (the Triton / reference path runs)."""
    monkeypatch.setattr(gs_cuda, "usable", lambda: pytest.fail("must not try to build"))
    u = torch.zeros(1, 3, 2, 4)
    mix = torch.zeros(1, 4, 1, 3, 3)
    monkeypatch.delenv("SSM_KERNELS_GRAPH_SCAN_CUDA_FWD", raising=False)
    assert not gs_cuda.cuda_fwd_applies(u, u, u, mix, 4)
    monkeypatch.setenv("SSM_KERNELS_GRAPH_SCAN_CUDA_FWD", "1")
    assert not gs_cuda.cuda_fwd_applies(u, u, u, mix, 4)
