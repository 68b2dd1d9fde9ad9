"""The CUDA kernels' own source, run on the CPU through a host emulation, against the reference.

``emulate/emulate.cpp`` compiles ``csrc/selective_scan_kernels.cuh`` and ``csrc/selective_scan_short.cuh``
with g++ (one OS thread per CUDA thread, barriers for ``__syncthreads`` and warp shuffles, NaN-poisoned
shared memory). This checks the kernels' indexing, chunking, checkpoints, packed sequences and warp
reductions without a GPU. The host glue below mirrors ``csrc/selective_scan.cpp``. Needs g++ with
C++20 and the CUDA headers (for the half/bfloat16 types).

The general kernels are slow to emulate: they run only with ``SSM_KERNELS_EMULATE=1`` (marker
``slow``). The short-sequence kernels (L <= 16) run a few small cases by default (a short-only build
of the emulator, seconds) and a wider sweep under ``slow``.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from ssm_kernels.testing import assert_close_to_reference
from ssm_kernels.testing.scan_params import ScanParams
from ssm_kernels.testing.selective_scan import (
    clone_keep_alignment,
    make_scan_inputs,
    make_short_case_inputs,
    misaligned_copy,
    run_scan_with_grads,
)

HERE = Path(__file__).resolve().parent
CSRC = HERE.parents[1] / "src" / "ssm_kernels" / "selective_scan" / "csrc"
CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
K_ROWS = 64
EMU_SLOTS = 4  # resident blocks of the emulated "GPU" (segment choice of the general backward)
STATE_ROWS_BWD = 32  # rows per block of the state-lane backward (kStateRowsBwd)
LONG_BWD_CHUNK, LONG_WARPS = 128, 4
LONG_MIN_L = 128  # ssk::kLongMinL
EMU_SMS = 132  # SMs of the emulated "GPU" (the state-lane forward's rule; an H200's count)

pytestmark = [
    pytest.mark.skipif(
        shutil.which("g++") is None or not (CUDA_INCLUDE / "cuda_fp16.h").exists(),
        reason="needs g++ and the CUDA headers",
    ),
]

_I = ctypes.c_int


_LIBS: dict[bool, ctypes.CDLL] = {}


def _lib(short_only: bool = False):
    """The emulator library; ``short_only`` builds just the short-sequence kernels (fast compile)."""
    if short_only and False in _LIBS:
        return _LIBS[False]
    if short_only not in _LIBS:
        tmp = tempfile.mkdtemp(prefix="ssk_emu_")
        atexit.register(shutil.rmtree, tmp, True)  # the library stays loaded; its file goes at exit
        out = Path(tmp) / "libemu.so"
        flags = ["-DSSK_EMU_SHORT_ONLY"] if short_only else []
        cmd = ["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-Wno-unknown-pragmas", *flags, f"-I{CUDA_INCLUDE}",
               f"-I{CSRC}", str(HERE / "emulate" / "emulate.cpp"), "-o", str(out), "-lpthread"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        lib = ctypes.CDLL(str(out))
        full = ["emu_scan_fwd", "emu_scan_bwd", "emu_scan_fwd_long", "emu_scan_bwd_long"]
        names = ["emu_scan_fwd_short", "emu_scan_bwd_short"] + ([] if short_only else full)
        for name in names:
            getattr(lib, name).argtypes = [ctypes.POINTER(ScanParams), _I]
        assert lib.emu_sizeof_params() == ctypes.sizeof(ScanParams), "ScanParams layout mismatch"
        _LIBS[short_only] = lib
    return _LIBS[short_only]


_DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _ptr(t):
    return None if t is None else t.data_ptr()


class EmulatedExtension:
    """Stand-in for the compiled extension: ``fwd``/``bwd``/``choose_chunk`` as in selective_scan.cpp,
    running the emulated kernels on CPU tensors (outputs poisoned with NaN before the launch).
    ``calls`` records which kernels ran ("fwd", "bwd", "fwd_short", "bwd_short", "fwd_long", "bwd_long")."""

    def __init__(self, short_only: bool = False):
        self.short_only = short_only
        self.calls: list[str] = []
        self.part_modes: list[int] = []  # dB / dC partial modes of the short backward calls
        self.long_rw: list[int] = []  # rows per warp of the long backward calls
        self.long_fwd: list[tuple[str, int]] = []  # design and states per lane of the long forward calls
        self.tile_minb: list[int] = []  # per state-lane forward call: the staged kernel's register cap (0: not staged)
        self.staged: list[tuple[int, int]] = []  # (B, C) staged in shared memory, per short-kernel call
        self.rows: list[int] = []  # whether each short-kernel call ran the one-thread-per-row kernels
        self.segments: list[int] = []  # time segments of each general backward call
        self.fwd_segments: list[int] = []  # time segments of each general forward call

    def choose_chunk(self, N, L, nrows):
        return _lib(self.short_only).emu_choose_chunk(int(N), int(L))

    def backward_segments(self, N, L, nrows, K, state=False, tile=False):
        """As segments_for in selective_scan.cpp, for a GPU of EMU_SLOTS resident blocks (so that the small test
        grids split into segments by default); ``SSM_KERNELS_SCAN_BWD_SEGMENTS`` as there. ``state``: for the
        state-lane backward (STATE_ROWS_BWD rows per block, the cost model even when the rows fill the GPU);
        ``tile``: for its staged kernel (the same rows per block, tile_bwd_segments)."""
        forced = int(os.environ.get("SSM_KERNELS_SCAN_BWD_SEGMENTS") or 0)
        chunks = ctypes.c_int(0)
        rows = STATE_ROWS_BWD if state else K_ROWS
        rowblocks = ctypes.c_longlong((nrows + rows - 1) // rows)
        model = 2 if tile else int(state)
        count = _lib(self.short_only).emu_plan_segments(
            (L + K - 1) // K, forced, rowblocks, ctypes.c_longlong(EMU_SLOTS), model, ctypes.byref(chunks)
        )
        return count, chunks.value

    @staticmethod
    def uses_short_path(L, has_cu):
        from ssm_kernels.selective_scan.cuda import short_path

        return short_path(int(L), bool(has_cu))

    @staticmethod
    def uses_long_path(L, has_cu):
        from ssm_kernels.selective_scan.cuda import long_path

        return long_path(int(L), bool(has_cu))

    @staticmethod
    def uses_long_inference_path(L, has_cu):
        from ssm_kernels.selective_scan.cuda import long_inference_path

        return long_inference_path(int(L), bool(has_cu))

    def _common(self, u, delta, A, B, C, D, z, delta_bias, h0, cu, softplus):
        batch, dim, L = u.shape
        N = A.shape[1]
        nseq = batch if cu is None else cu.numel() - 1
        p = ScanParams(batch=batch, dim=dim, L=L, N=N, nrows=batch * dim, nseq=nseq, softplus=int(softplus))
        bc_dt = [t.dtype for t in (B, C) if t.dim() == 4]
        assert len(set(bc_dt)) <= 1, "variable B and C must have the same dtype"
        p.bc_dtype = _DT[bc_dt[0]] if bc_dt else _DT[u.dtype]
        p.u, p.delta, p.z, p.A, p.B, p.C = _ptr(u), _ptr(delta), _ptr(z), _ptr(A), _ptr(B), _ptr(C)
        p.b_groups = 0 if B.dim() == 2 else B.shape[1]
        p.c_groups = 0 if C.dim() == 2 else C.shape[1]
        p.smem_b = int(p.b_groups > 0 and (dim // p.b_groups) % K_ROWS == 0)
        p.smem_c = int(p.c_groups > 0 and (dim // p.c_groups) % K_ROWS == 0)
        p.D, p.delta_bias, p.h0, p.cu = _ptr(D), _ptr(delta_bias), _ptr(h0), _ptr(cu)
        # as set_short_stage (applied by the short kernels only)
        stage = os.environ.get("SSM_KERNELS_SCAN_SHORT_STAGE") == "1"
        ok = _lib(self.short_only).emu_short_stage_ok
        p.short_stage_b = int(stage and p.b_groups > 0 and ok(dim // p.b_groups, N) == 1)
        p.short_stage_c = int(stage and p.c_groups > 0 and ok(dim // p.c_groups, N) == 1)
        # as set_short_options: one thread per row where it applies, unless SSM_KERNELS_SCAN_SHORT_ROWS=0
        rows_off = os.environ.get("SSM_KERNELS_SCAN_SHORT_ROWS") == "0"
        p.short_rows = int(
            not rows_off and _lib(self.short_only).emu_short_rows_ok(dim, p.b_groups, p.c_groups, N) == 1
        )
        for t in (u, delta, A, B, C, D, z, delta_bias, h0, cu):
            assert t is None or t.is_contiguous()
        return p

    def _use_state_fwd(self, p):
        """As use_state_fwd: SSM_KERNELS_SCAN_STATE_FWD=0|1, else ssk::state_fwd_auto with EMU_SMS SMs."""
        flag = os.environ.get("SSM_KERNELS_SCAN_STATE_FWD", "")
        if flag:
            return flag == "1"
        bc16 = p.bc_dtype != _DT[torch.float32] or (p.b_groups == 0 and p.c_groups == 0)
        lib = _lib(self.short_only)
        tile = lib.emu_tile_fwd_fits(p.N, p.dim, p.b_groups, p.c_groups, int(bool(p.cu)), int(bool(p.ckpt)), p.K)
        rows = ctypes.c_longlong(p.nrows)
        return lib.emu_state_fwd_auto(rows, p.N, int(bc16), EMU_SMS, int(bool(p.ckpt)), tile) == 1

    def _run_long_fwd(self, p, dtype, state):
        """As set_long_fwd + launch_fwd_long_*: the state-lane (state) or warp-split design."""
        p.long_fwd = int(state)
        p.long_ns = int(os.environ.get("SSM_KERNELS_SCAN_STATE_NS", "4"))
        self.long_fwd.append(("state", p.long_ns) if state else ("warp", 0))
        # as set_long_fwd: the staged kernel where it fits, SSM_KERNELS_SCAN_STATE_TILE 0 / 4 / 5 (off / forced cap)
        flag = os.environ.get("SSM_KERNELS_SCAN_STATE_TILE", "")
        lib = _lib(self.short_only)
        fits = lib.emu_tile_fwd_fits(p.N, p.dim, p.b_groups, p.c_groups, int(bool(p.cu)), int(bool(p.ckpt)), p.K)
        minb = int(flag) if flag in ("4", "5") else lib.emu_tile_min_blocks(ctypes.c_longlong(p.nrows), EMU_SMS)
        p.tile_minb = minb if state and flag != "0" and p.long_ns == 4 and fits else 0
        if state:
            self.tile_minb.append(p.tile_minb)
        assert _lib(self.short_only).emu_scan_fwd_long(ctypes.byref(p), _DT[dtype]) == 0

    def fwd(self, u, delta, A, B, C, D, z, delta_bias, h0, cu, softplus, want_last, K):
        p = self._common(u, delta, A, B, C, D, z, delta_bias, h0, cu, softplus)
        nan = float("nan")
        out = torch.full_like(u, nan)
        last = torch.full((p.nseq, p.dim, p.N), nan) if want_last else None  # as scan_fwd: None when not asked
        ckpt = None
        p.K = K if K > 0 else 1
        if K > 0:
            nck = (p.L + K - 1) // K - 1
            ckpt = torch.full((max(nck, 0), p.N, p.nrows), nan)
            p.ckpt = _ptr(ckpt) if nck > 0 else None
        p.out, p.last, p.tile = _ptr(out), (_ptr(last) if want_last else None), min(p.L, 32)
        if self.uses_short_path(p.L, cu is not None) and not p.ckpt:  # as scan_fwd: short kernels, no checkpoints
            self.calls.append("fwd_short")
            self.staged.append((p.short_stage_b, p.short_stage_c))
            self.rows.append(p.short_rows)
            assert _lib(self.short_only).emu_scan_fwd_short(ctypes.byref(p), _DT[u.dtype]) == 0
        elif self.uses_long_path(p.L, cu is not None) or (
            K == 0 and self.uses_long_inference_path(p.L, cu is not None)
        ):
            self.calls.append("fwd_long")
            self._run_long_fwd(p, u.dtype, self._use_state_fwd(p))
        elif p.ckpt and cu is None and p.L >= LONG_MIN_L and self._use_state_fwd(p):  # as scan_fwd: training calls
            self.calls.append("fwd_state")
            self._run_long_fwd(p, u.dtype, True)
        else:
            self.calls.append("fwd")
            seg = None
            p.nseg, p.seg_chunks = 1, 0
            if p.ckpt and cu is None and os.environ.get("SSM_KERNELS_SCAN_FWD_SEGMENTS") != "0":
                p.nseg, p.seg_chunks = self.backward_segments(p.N, p.L, p.nrows, K)  # as scan_fwd
                if p.nseg > 1:
                    seg = torch.full((p.nseg, 2, p.N, p.nrows), nan)
                    p.seg = _ptr(seg)
            self.fwd_segments.append(p.nseg)
            assert _lib(self.short_only).emu_scan_fwd(ctypes.byref(p), _DT[u.dtype]) == 0
        return out, last, ckpt

    def bwd(self, u, delta, A, B, C, D, z, delta_bias, h0, cu, softplus, ckpt, K, dout, dlast, want_dh0):
        p = self._common(u, delta, A, B, C, D, z, delta_bias, h0, cu, softplus)
        batch, dim, L, N, nrows = p.batch, p.dim, p.L, p.N, p.nrows
        p.K = K
        nck = (L + K - 1) // K - 1
        assert ckpt.numel() == max(nck, 0) * N * nrows
        p.ckpt = _ptr(ckpt) if nck > 0 else None
        nan = float("nan")
        du, ddelta = torch.full_like(u, nan), torch.full_like(u, nan)
        dz = torch.full_like(u, nan) if z is not None else None
        # as scan_bwd: one per-row partial buffer [dA | dD | d delta_bias | constant dB | constant dC]
        cb_cols, cc_cols = (N if p.b_groups == 0 else 0), (N if p.c_groups == 0 else 0)
        p.rp_stride = N + 2 + cb_cols + cc_cols
        short = self.uses_short_path(L, cu is not None)
        long = not short and K == LONG_BWD_CHUNK
        lib = _lib(self.short_only)
        seg = None
        p.nseg, p.seg_chunks = 1, 0
        flag = os.environ.get("SSM_KERNELS_SCAN_STATE_BWD", "")
        assert flag in ("", "0", "1"), flag
        # as scan_bwd: the state-lane backward
        state = not short and not long and cu is None and lib.emu_state_bwd_fits(N, dim, p.b_groups, p.c_groups) == 1
        state = state and (lib.emu_state_bwd_auto(K) == 1 if flag == "" else flag == "1")
        # its staged kernel where that fits (SSM_KERNELS_SCAN_STATE_BWD_TILE=0 keeps the unstaged one)
        tile_flag = os.environ.get("SSM_KERNELS_SCAN_STATE_BWD_TILE", "")
        assert tile_flag in ("", "0", "1"), tile_flag
        tile = state and tile_flag != "0"
        tile = tile and lib.emu_tile_bwd_fits(N, dim, p.b_groups, p.c_groups, int(cu is not None), K) == 1
        if not short and not long and cu is None:  # as scan_bwd: time segments of the general or state-lane backward
            p.nseg, p.seg_chunks = self.backward_segments(N, L, nrows, K, state, tile)
            self.segments.append(p.nseg)
            if p.nseg > 1:
                seg = torch.full((p.nseg, 2, N, nrows), nan)
                p.seg = _ptr(seg)
        row_part = torch.full((p.nseg * nrows, p.rp_stride), nan)
        if long:  # as long_rows_per_warp (SSM_KERNELS_SCAN_LONG_RW, else the largest rw that fits: no cost model)
            sizes = [dim // g for g in (p.b_groups, p.c_groups) if g > 0]
            forced = os.environ.get("SSM_KERNELS_SCAN_LONG_RW")
            fits = [rw for rw in (8, 4, 2, 1) if all(s % (LONG_WARPS * rw) == 0 for s in sizes)]
            p.long_rw = int(forced) if forced else fits[0]
            assert p.long_rw in fits
            self.long_rw.append(p.long_rw)

        def alloc(groups):
            if groups == 0:
                return None, 0, 0
            gs = dim // groups
            if long:
                uniform, npart = 1, gs // (LONG_WARPS * p.long_rw)
            elif short and p.short_rows:  # one thread per row: one partial per warp
                uniform, npart = 1, gs // 32
                self.part_modes.append(uniform)
            elif short:  # 0: per warp segment, 1: per warp, 2: per block (ShortPartMode)
                uniform, npart = lib.emu_short_part_mode(gs, N), lib.emu_short_npart(gs, N)
                self.part_modes.append(uniform)
            else:
                uniform = int(gs % 32 == 0)
                npart = gs // 32 if uniform else (gs - 1) // 32 + 2
            shape = (batch * groups, npart, N, L)
            return (torch.full(shape, nan) if uniform else torch.zeros(shape)), npart, uniform

        dB_part, p.npart_b, p.uniform_b = alloc(p.b_groups)
        dC_part, p.npart_c, p.uniform_c = alloc(p.c_groups)
        dh0 = torch.zeros(p.nseq, dim, N) if want_dh0 else None
        p.dout, p.dlast, p.du, p.ddelta = _ptr(dout), _ptr(dlast), _ptr(du), _ptr(ddelta)
        p.dz = _ptr(dz)
        rp, f = row_part.data_ptr(), row_part.element_size()
        p.dA_part, p.dD_part, p.ddb_part = rp, rp + N * f, rp + (N + 1) * f
        p.dB_part = _ptr(dB_part) if dB_part is not None else rp + (N + 2) * f
        p.dC_part = _ptr(dC_part) if dC_part is not None else rp + (N + 2 + cb_cols) * f
        p.dh0 = _ptr(dh0)
        p.tile_minb = 4 if tile else 0  # as scan_bwd: kTileBwdBlocks for the staged kernel
        self.calls.append(
            "bwd_short" if short else "bwd_long" if long else "bwd_tile" if tile else "bwd_state" if state else "bwd"
        )
        p.long_fwd = int(state)
        if short:
            self.staged.append((p.short_stage_b, p.short_stage_c))
            self.rows.append(p.short_rows)
        run = lib.emu_scan_bwd_short if short else lib.emu_scan_bwd_long if long or state else lib.emu_scan_bwd
        assert run(ctypes.byref(p), _DT[u.dtype]) == 0

        row_sum = row_part.view(p.nseg * batch, dim, p.rp_stride).sum(0)

        def finish(part, groups, col):
            if groups == 0:
                return row_sum[:, col : col + N]
            return part.sum(1).view(batch, groups, N, L)

        dB, dC = finish(dB_part, p.b_groups, N + 2), finish(dC_part, p.c_groups, N + 2 + cb_cols)
        return du, ddelta, row_sum[:, :N], dB, dC, row_sum[:, N], dz, row_sum[:, N + 1], dh0


@pytest.fixture
def emulated_cuda_backend(monkeypatch):
    """Route ssm_kernels.selective_scan.cuda through the emulated extension (all kernels) on CPU tensors."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    monkeypatch.setattr(scan_cuda, "_EXT", EmulatedExtension())
    return scan_cuda


@pytest.fixture
def emulated_short_backend(monkeypatch):
    """As emulated_cuda_backend, with a short-kernels-only emulator build (fast to compile)."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    monkeypatch.delenv("SSM_KERNELS_SCAN_SHORT", raising=False)
    monkeypatch.delenv("SSM_KERNELS_SCAN_SHORT_ROWS", raising=False)
    ext = EmulatedExtension(short_only=True)
    monkeypatch.setattr(scan_cuda, "_EXT", ext)
    return scan_cuda


def _check_against_reference(scan_cuda, x, *, softplus, with_last, seed=2):
    """Emulated kernels vs selective_scan_ref (float64 and input dtype): output, last state, every gradient."""
    from ssm_kernels.selective_scan.reference import check_scan_inputs, selective_scan_ref

    def fast(**kw):
        sp = kw.pop("delta_softplus")
        last = kw.pop("return_last_state")
        info = check_scan_inputs(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"], kw["delta_bias"],
                                 kw["initial_state"], kw["cu_seqlens"])  # fmt: skip
        return scan_cuda.selective_scan_cuda(info, kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"],
                                             kw["delta_bias"], sp, last, kw["initial_state"], kw["cu_seqlens"])  # fmt: skip

    u = x["u"]
    batch, dim, L = u.shape
    N = x["A"].shape[1]
    g = torch.Generator().manual_seed(seed)
    nseq = batch if x["cu_seqlens"] is None else x["cu_seqlens"].numel() - 1
    dout = torch.randn(batch, dim, L, generator=g)
    dlast = torch.randn(nseq, dim, N, generator=g) if with_last else None

    def leafs(dt):  # copies as misaligned as the inputs (for the fast path)
        return {k: ((clone_keep_alignment(v) if dt is None else v.detach().to(dt, copy=True)).requires_grad_(True)
                    if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in x.items()}  # fmt: skip

    out, last, grads = run_scan_with_grads(fast, leafs(None), dout, dlast, delta_softplus=softplus)
    out_hi, last_hi, g_hi = run_scan_with_grads(
        selective_scan_ref, leafs(torch.float64), dout, dlast, delta_softplus=softplus
    )
    out_lo, last_lo, g_lo = run_scan_with_grads(selective_scan_ref, leafs(None), dout, dlast, delta_softplus=softplus)
    assert_close_to_reference("out", out, out_hi, out_lo)
    if with_last:
        assert_close_to_reference("last_state", last, last_hi, last_lo)
    assert set(grads) == set(g_hi), f"gradients {sorted(grads)} vs reference {sorted(g_hi)}"
    for k in g_hi:
        assert_close_to_reference(f"d{k}", grads[k], g_hi[k], g_lo[k])


# id, batch, dim, L, N, bc, groups, cu_seqlens, init, z/D/bias, softplus
CASES = [
    ("L1", 2, 3, 1, 4, "variable", 1, None, True, True, True),
    ("dim65-L7", 2, 65, 7, 16, "variable", 1, None, False, True, True),
    ("block-staged-L70", 2, 64, 70, 16, "variable", 1, None, True, True, True),
    ("grouped-nonuniform", 2, 65, 40, 8, "grouped", 5, None, True, True, True),
    ("grouped-warp-uniform", 1, 96, 40, 16, "grouped", 3, None, False, True, True),
    ("grouped-per-channel", 2, 5, 40, 8, "grouped", 5, None, True, True, True),
    ("N64", 1, 64, 20, 64, "variable", 1, None, True, True, True),
    ("N32", 2, 40, 37, 32, "variable", 1, None, False, True, True),
    ("N5-padded", 2, 33, 50, 5, "variable", 1, None, True, True, True),
    ("constant-BC", 2, 3, 45, 4, "constant", 1, None, True, True, True),
    ("plain", 2, 32, 33, 8, "variable", 1, None, False, False, False),
    ("packed", 1, 65, 100, 16, "variable", 1, [0, 1, 1, 40, 99, 100], True, True, True),
    ("packed-staged", 1, 64, 97, 16, "variable", 1, [0, 33, 64, 97], True, True, True),
    ("packed-empty-ends", 1, 32, 20, 4, "grouped", 2, [0, 0, 20, 20], True, True, True),
    # 16-byte vector tiles (L % 8 == 0): several forward tiles and backward chunks, staged B/C, prefetch
    ("vec-staged-L80", 1, 64, 80, 16, "variable", 1, None, True, True, True),
    ("vec-partial-rows", 2, 40, 48, 16, "variable", 1, None, False, True, True),
]


def _enabled():
    return os.environ.get("SSM_KERNELS_EMULATE", "0") == "1"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_emulated_kernels_match_reference(case, dtype, emulated_cuda_backend, monkeypatch):
    """The general kernels; the short path is switched off so that L <= 16 cases test them too."""
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT", "0")
    _, batch, dim, L, N, bc, groups, cu, init, extras, sp = case
    x = make_scan_inputs(batch, dim, L, N, bc=bc, groups=groups, cu_seqlens=cu, with_initial_state=init,
                         with_D=extras, with_z=extras, with_delta_bias=extras, dtype=dtype, seed=1,
                         positive_delta=not sp)  # fmt: skip
    _check_against_reference(emulated_cuda_backend, x, softplus=sp, with_last=True)
    assert "fwd_short" not in emulated_cuda_backend._EXT.calls


if not _enabled():  # keep it out of plain `-m slow` sweeps unless asked for explicitly
    test_emulated_kernels_match_reference = pytest.mark.skip(reason="set SSM_KERNELS_EMULATE=1")(
        test_emulated_kernels_match_reference
    )


# Short-sequence kernels (L <= 16, no cu_seqlens): R = NP / 4 lanes per row, 32 / R rows per warp.
# id, batch, dim, L, N, bc, groups, init, z/D/bias, softplus, dtype, bc_dtype, with_last
_F32, _F16, _BF16 = torch.float32, torch.float16, torch.bfloat16
SHORT_FAST = [
    # TUSZ-like features; dim 20 is no multiple of 8 rows per warp: segmented dB/dC reduction, 2 blocks
    ("tusz-like-dim20-L10-N16", 3, 20, 10, 16, "variable", 1, True, True, True, _F32, None, True),
    # R = 2; one row per group (segments of one row), bf16 with fp32 B/C, nothing optional
    ("L1-N5-per-channel-bf16", 2, 5, 1, 5, "grouped", 5, False, False, False, _BF16, _F32, False),
    # R = 16 (2 rows per warp); group size 2: warp-uniform reduce-scatter; fp16 B/C in fp16
    ("L16-N33-uniform-fp16", 1, 6, 16, 33, "grouped", 3, True, True, True, _F16, None, True),
    # R = 1 (32 rows per warp, partial last warp); time-invariant B/C
    ("L2-N1-constant", 2, 9, 2, 1, "constant", 1, True, True, True, _F32, None, True),
    # R = 4, group size 64 = 2 blocks of 32 rows: one partial per block; bf16 B/C in bf16; z/D/bias off
    # (lane-split kernels: SSM_KERNELS_SCAN_SHORT_ROWS=0, see ROWS_OFF)
    ("L10-N16-block-bf16", 1, 128, 10, 16, "grouped", 2, True, False, True, _BF16, None, True),
    # one thread per row (groups of whole warps, N <= 16): the TUSZ configuration, 3 blocks of 64 rows
    ("rows-tusz-L10-N16", 3, 64, 10, 16, "variable", 1, True, True, True, _F32, None, True),
    # rows: N 3 (padded 4), L 1, fp16 with fp32 B / C, groups of one warp
    ("rows-L1-N3-fp16-fp32bc", 2, 64, 1, 3, "grouped", 2, False, True, True, _F16, _F32, True),
    # rows: N 7 (padded 8), L 16, bf16, nothing optional, no softplus; 96 rows: the second block's second warp is
    # past the end
    ("rows-L16-N7-bf16-plain", 1, 96, 16, 7, "grouped", 3, True, False, False, _BF16, None, False),
]
# cases that qualify for the one-thread-per-row kernels but run the lane-split ones (SSM_KERNELS_SCAN_SHORT_ROWS=0)
ROWS_OFF = {"L10-N16-block-bf16", "L10-N16-tusz-dim64"}
# dB / dC partial mode of the short backward (0: warp segments, 1: per warp, 2: per block) where B / C vary
PART_MODE = {
    "tusz-like-dim20-L10-N16": 0,
    "L1-N5-per-channel-bf16": 0,
    "L16-N33-uniform-fp16": 1,
    "L10-N16-block-bf16": 2,
    "L10-N16-tusz-dim64": 2,
    "L2-N5-nonuniform": 0,
    "L16-N5-fp16-fp32bc": 0,
    "L10-N33-grouped-nonuniform": 0,
    "L16-N16-dim65": 0,
    "L16-N16-warp-uniform-groups": 1,
}
SHORT_SLOW = [
    ("L16-N16-dim65", 2, 65, 16, 16, "variable", 1, True, True, True, _F32, None, True),
    ("L10-N16-tusz-dim64", 4, 64, 10, 16, "variable", 1, False, True, True, _F32, None, True),
    ("L2-N5-nonuniform", 2, 65, 2, 5, "grouped", 5, True, True, True, _F32, None, True),
    ("L1-N33-constant", 2, 7, 1, 33, "constant", 1, True, True, False, _F32, None, True),
    ("L16-N1-bf16", 3, 33, 16, 1, "variable", 1, True, True, True, _BF16, None, False),
    ("L10-N33-grouped-nonuniform", 1, 12, 10, 33, "grouped", 4, False, True, True, _BF16, _F32, True),
    ("L16-N5-fp16-fp32bc", 2, 24, 16, 5, "grouped", 3, True, True, True, _F16, _F32, True),
    ("L2-N16-plain", 2, 40, 2, 16, "variable", 1, False, False, False, _F32, None, False),
    ("L10-N64", 1, 5, 10, 64, "variable", 1, True, True, True, _F32, None, True),
    ("L1-N8-constant-bf16", 2, 17, 1, 8, "constant", 1, True, True, True, _BF16, None, True),
    ("L16-N16-warp-uniform-groups", 1, 48, 16, 16, "grouped", 3, True, True, True, _F32, None, True),
]


def _rows_expected(case):
    """Whether the one-thread-per-row kernels run a short case (as ssk::short_rows_ok, unless switched off)."""
    _, _, dim, _, N, bc, groups = case[:7]
    on = os.environ.get("SSM_KERNELS_SCAN_SHORT_ROWS") != "0"
    return on and bc != "constant" and N <= 16 and (dim // groups) % 32 == 0


def _short_case(case, backend, monkeypatch):
    if case[0] in ROWS_OFF:
        monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_ROWS", "0")
    x = make_short_case_inputs(case, seed=3)
    _check_against_reference(backend, x, softplus=case[9], with_last=case[12], seed=4)
    assert backend._EXT.calls == ["fwd_short", "bwd_short"], backend._EXT.calls
    rows = _rows_expected(case)
    assert backend._EXT.rows == [int(rows)] * 2, backend._EXT.rows
    if rows:  # dB / dC partials per warp
        assert backend._EXT.part_modes == [1] * 2, backend._EXT.part_modes
    elif case[0] in PART_MODE:
        assert backend._EXT.part_modes == [PART_MODE[case[0]]] * 2, backend._EXT.part_modes


@pytest.mark.parametrize("case", SHORT_FAST, ids=[c[0] for c in SHORT_FAST])
def test_emulated_short_kernels_match_reference(case, emulated_short_backend, monkeypatch):
    _short_case(case, emulated_short_backend, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("case", SHORT_SLOW, ids=[c[0] for c in SHORT_SLOW])
def test_emulated_short_kernels_sweep(case, emulated_short_backend, monkeypatch):
    _short_case(case, emulated_short_backend, monkeypatch)


@pytest.mark.parametrize("dtype", [_F32, _BF16], ids=["fp32", "bf16"])
def test_emulated_short_rows_misaligned_inputs(dtype, emulated_short_backend, monkeypatch):
    """The one-thread-per-row kernels on contiguous inputs that start 1 element past a 16-byte boundary: element
    loads instead of 16-byte ones."""
    case = ("rows-misaligned", 2, 64, 10, 16, "variable", 1, True, True, True, dtype, None, True)
    x = make_short_case_inputs(case, seed=5)
    for k in ("u", "delta", "z"):
        x[k] = misaligned_copy(x[k])
    _check_against_reference(emulated_short_backend, x, softplus=True, with_last=True, seed=6)
    assert emulated_short_backend._EXT.rows == [1, 1]


def test_emulated_short_path_rules(emulated_short_backend, monkeypatch):
    """L <= 16 without cu_seqlens takes the short kernels and allocates no checkpoints; the env switch turns
    them off, as do longer or packed sequences."""
    scan_cuda = emulated_short_backend
    assert scan_cuda.short_path(16, False) and scan_cuda.short_path(1, False)
    assert not scan_cuda.short_path(17, False) and not scan_cuda.short_path(10, True)
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT", "0")
    assert not scan_cuda.short_path(10, False)
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT", "1")
    assert scan_cuda.short_path(10, False)

    x = make_scan_inputs(1, 4, 10, 16, seed=5, requires_grad=True)
    saved = []
    orig_fwd = scan_cuda._EXT.fwd

    def fwd(*args):
        res = orig_fwd(*args)
        saved.append((args[-1], res[2]))
        return res

    monkeypatch.setattr(scan_cuda._EXT, "fwd", fwd)
    out = scan_cuda.selective_scan_cuda(None, x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                        x["delta_bias"], True, False, None, None)  # fmt: skip
    out.sum().backward()
    ((K, ckpt),) = saved
    assert K == 10 and ckpt.numel() == 0
    assert scan_cuda._EXT.calls == ["fwd_short", "bwd_short"]


@pytest.mark.slow
def test_emulated_short_switch_matches_general_kernels(emulated_cuda_backend, monkeypatch):
    """SSM_KERNELS_SCAN_SHORT=0 vs default on the same inputs (general vs short kernels): both match each other."""
    if not _enabled():
        pytest.skip("set SSM_KERNELS_EMULATE=1")
    x = make_scan_inputs(2, 40, 10, 16, with_initial_state=True, seed=6)
    outs = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT", flag)
        emulated_cuda_backend._EXT.calls.clear()
        _check_against_reference(emulated_cuda_backend, x, softplus=True, with_last=True)
        outs[flag] = list(emulated_cuda_backend._EXT.calls)
    assert outs == {"0": ["fwd", "bwd"], "1": ["fwd_short", "bwd_short"]}


# Long-sequence forward (SSM_KERNELS_SCAN_LONG=1, L >= 128): one warp per row, 8 steps per lane, 4 rows per block.
# id, batch, dim, L, N, bc, groups, init, z/D/bias, softplus, dtype, bc_dtype
LONG_CASES = [
    # two chunks (256 + 44 steps), a partial last block of rows, fp32 element loads where unaligned
    ("L300-N16-dim5", 2, 5, 300, 16, "variable", 1, True, True, True, _F32, None),
    # exactly one chunk half full; bf16 16-byte vectors; N padded 5 -> 8; grouped B / C
    ("L128-N5-grouped-bf16", 1, 8, 128, 5, "grouped", 2, False, True, True, _BF16, None),
    # L % 8 != 0: rows start unaligned, lanes mix vector and element loads; fp16 with fp32 B / C; NP 64
    ("L260-N33-fp16-fp32bc", 1, 3, 260, 33, "variable", 1, True, True, False, _F16, _F32),
    # time-invariant B / C, nothing optional
    ("L513-N4-constant", 1, 4, 513, 4, "constant", 1, False, False, False, _F32, None),
    # NP 64: the state-lane forward's 16 lanes per row and 16-step chunks, with its 16-byte B / C loads (L % 16 == 0)
    ("L272-N40-bf16", 1, 3, 272, 40, "variable", 1, True, True, True, _BF16, None),
]


def _long_inputs(case, seed):
    _, batch, dim, L, N, bc, groups, init, extras, sp, dtype, bc_dtype = case
    return make_scan_inputs(batch, dim, L, N, bc=bc, groups=groups, with_initial_state=init, with_D=extras,
                            with_z=extras, with_delta_bias=extras, dtype=dtype, bc_dtype=bc_dtype, seed=seed,
                            positive_delta=not sp)  # fmt: skip


@pytest.fixture
def emulated_long_backend(monkeypatch):
    """The emulated extension with the long-sequence forward switched on."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", "1")
    monkeypatch.setattr(scan_cuda, "_EXT", EmulatedExtension())
    return scan_cuda


# the long forward's designs (SSM_KERNELS_SCAN_STATE_FWD, SSM_KERNELS_SCAN_STATE_NS) and what the extension ran
LONG_FWD_DESIGNS = {"warp": ("0", None, ("warp", 0)), "state": ("1", None, ("state", 4)),
                    "state-ns2": ("1", "2", ("state", 2))}  # fmt: skip


def _set_long_fwd_design(monkeypatch, design):
    fwd, ns, want = LONG_FWD_DESIGNS[design]
    for var, val in (("SSM_KERNELS_SCAN_STATE_FWD", fwd), ("SSM_KERNELS_SCAN_STATE_NS", ns)):
        if val is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, val)
    return want


@pytest.mark.parametrize("design", list(LONG_FWD_DESIGNS))
@pytest.mark.parametrize("case", LONG_CASES, ids=[c[0] for c in LONG_CASES])
def test_emulated_long_forward_matches_reference(case, design, emulated_long_backend, monkeypatch):
    """Output and last state of the long-sequence forward against the reference (no autograd: no checkpoints), for
    each design: time over a warp's lanes, states over a row's lanes (4 or 2 per lane)."""
    want = _set_long_fwd_design(monkeypatch, design)
    _check_inference_forward(emulated_long_backend, _long_inputs(case, seed=7), case[9])
    assert emulated_long_backend._EXT.calls == ["fwd_long"]
    assert emulated_long_backend._EXT.long_fwd == [want]  # (2 states per lane exist for padded N 16 only)


def _check_inference_forward(scan_cuda, x, sp):
    """A no-grad call through ``scan_cuda`` (no checkpoints): output and last state against the reference."""
    from ssm_kernels.selective_scan.reference import selective_scan_ref

    with torch.no_grad():
        out, last = scan_cuda.selective_scan_cuda(
            None, x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], sp, True,
            x["initial_state"], None)  # fmt: skip
        hi = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in x.items()}
        out_hi, last_hi = selective_scan_ref(**hi, delta_softplus=sp, return_last_state=True)
        out_lo, last_lo = selective_scan_ref(**x, delta_softplus=sp, return_last_state=True)
    assert_close_to_reference("out", out, out_hi, out_lo)
    assert_close_to_reference("last_state", last, last_hi, last_lo)


def _long_and_general_forward(ext, x, K, monkeypatch):
    """The extension's forward with checkpoints every K steps through the long path (SSM_KERNELS_SCAN_LONG=1, the
    design set by the caller) and through the general forward: two (out, last, ckpt) triples."""
    args = [x[k] for k in ("u", "delta", "A")]
    args += [t.contiguous() if t.dim() == 2 else t.unsqueeze(1).contiguous() for t in (x["B"], x["C"])]
    args += [x["D"], x["z"].contiguous(), x["delta_bias"], x["initial_state"], None, True, True, K]
    monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", "1")
    long = ext.fwd(*args)
    monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", "0")
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_FWD", "0")
    return long, ext.fwd(*args)


@pytest.mark.parametrize("K", [16, 5])
@pytest.mark.parametrize("design", list(LONG_FWD_DESIGNS))
def test_emulated_long_forward_checkpoints_match_general_kernel(design, K, emulated_long_backend, monkeypatch):
    """The long forward writes the same backward checkpoints (state before every K-th step) as the general one, for
    each design and for K a multiple of the state-lane chunk (8 steps) or not."""
    _set_long_fwd_design(monkeypatch, design)
    case = ("ckpt", 1, 6, 200, 16, "variable", 1, True, True, True, _F32, None)
    ext = emulated_long_backend._EXT
    (out_l, last_l, ck_l), (out_g, last_g, ck_g) = _long_and_general_forward(
        ext, _long_inputs(case, seed=8), K, monkeypatch
    )
    assert ext.calls == ["fwd_long", "fwd"]
    assert ck_l.shape == ((200 + K - 1) // K - 1, 16, 6) and not ck_l.isnan().any()
    torch.testing.assert_close(ck_l, ck_g, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_l, out_g, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last_l, last_g, rtol=1e-5, atol=1e-5)


def test_emulated_long_path_rules(monkeypatch):
    from ssm_kernels.selective_scan.cuda import long_inference_path, long_path

    monkeypatch.delenv("SSM_KERNELS_SCAN_LONG", raising=False)
    assert not long_path(4096, False)  # off by default in training
    assert long_inference_path(128, False) and not long_inference_path(127, False)  # on by default in inference
    assert not long_inference_path(4096, True)
    monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", "1")
    assert long_path(128, False) and not long_path(127, False) and not long_path(4096, True)
    monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", "0")
    assert not long_inference_path(4096, False)


@pytest.mark.parametrize("flag,want", [(None, "fwd_long"), ("0", "fwd")])
def test_emulated_inference_runs_the_long_forward_by_default(flag, want, monkeypatch):
    """Inference (no autograd, no checkpoints) at L >= 128 runs the long forward unless SSM_KERNELS_SCAN_LONG=0;
    a training forward keeps the general kernel (its checkpoints feed the general backward)."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    if flag is None:
        monkeypatch.delenv("SSM_KERNELS_SCAN_LONG", raising=False)
    else:
        monkeypatch.setenv("SSM_KERNELS_SCAN_LONG", flag)
    monkeypatch.setattr(scan_cuda, "_EXT", EmulatedExtension())
    x = _long_inputs(("inf", 1, 4, 200, 16, "variable", 1, True, True, True, _F32, None), seed=10)
    _check_inference_forward(scan_cuda, x, True)
    assert scan_cuda._EXT.calls == [want]
    xg = {k: (v.clone().requires_grad_(True) if k == "u" else v) for k, v in x.items()}
    scan_cuda._EXT.calls.clear()
    scan_cuda.selective_scan_cuda(
        None, xg["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, False,
        x["initial_state"], None)  # fmt: skip
    assert scan_cuda._EXT.calls == ["fwd"]


# The staged state-lane forward (scan_fwd_tile_kernel): padded N 16, variable B / C in groups of 32 channels.
TILE_CASES = [
    # 16-step chunks with a 12-step tail; bf16 vector loads (L % 4 == 0); two batch rows of 2 blocks each
    ("tile-L300-N16-bf16", 2, 64, 300, 16, "variable", 1, True, True, True, _BF16, None),
    # L odd: element loads throughout; N 10 padded to 16 (lanes with states past N); two groups of 32 channels
    ("tile-L131-N10-grouped-fp32", 1, 64, 131, 10, "grouped", 2, True, True, True, _F32, None),
    # fp16 with fp32 B / C; no z / D / delta_bias, no softplus, no initial state
    ("tile-L136-N16-fp16-fp32bc", 1, 32, 136, 16, "variable", 1, False, False, False, _F16, _F32),
]


@pytest.mark.parametrize("minb", ["1", "5"], ids=["auto", "minb5"])
@pytest.mark.parametrize("case", TILE_CASES, ids=[c[0] for c in TILE_CASES])
def test_emulated_tile_forward_matches_reference(case, minb, emulated_long_backend, monkeypatch):
    """Output and last state of the staged state-lane forward (the state design's default where it fits; the small
    grids take the 4-block cap, SSM_KERNELS_SCAN_STATE_TILE=5 the 5-block one, whose lanes write their partials every
    4 steps) against the reference; SSM_KERNELS_SCAN_STATE_TILE=0 runs the unstaged kernel instead."""
    _set_long_fwd_design(monkeypatch, "state")
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_TILE", minb)
    x = _long_inputs(case, seed=31)
    _check_inference_forward(emulated_long_backend, x, case[9])
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_TILE", "0")
    _check_inference_forward(emulated_long_backend, x, case[9])
    assert emulated_long_backend._EXT.tile_minb == [4 if minb == "1" else 5, 0]


def test_emulated_tile_forward_misaligned_inputs(emulated_long_backend, monkeypatch):
    """Rows that start off their vector boundary (u, delta, z, B, C one element past 16 bytes) take element loads."""
    _set_long_fwd_design(monkeypatch, "state")
    monkeypatch.delenv("SSM_KERNELS_SCAN_STATE_TILE", raising=False)
    x = _long_inputs(TILE_CASES[0], seed=32)
    x = {k: (misaligned_copy(v) if k in ("u", "delta", "z", "B", "C") else v) for k, v in x.items()}
    _check_inference_forward(emulated_long_backend, x, True)
    assert emulated_long_backend._EXT.tile_minb == [4]


@pytest.mark.parametrize("K,fits,L", [(16, True, 203), (8, True, 203), (8, True, 200), (24, True, 203),
                                       (40, True, 200), (128, True, 203), (5, False, 203)])  # fmt: skip
def test_emulated_tile_forward_checkpoints_match_general_kernel(K, fits, L, emulated_long_backend, monkeypatch):
    """The staged forward writes the general forward's checkpoints (the state before every K-th step) at its 16-step
    chunks' starts and middles, so for K % 8 == 0 (L 200: a last chunk's middle at L, past the last checkpoint);
    other K keep the unstaged kernel."""
    _set_long_fwd_design(monkeypatch, "state")
    monkeypatch.delenv("SSM_KERNELS_SCAN_STATE_TILE", raising=False)
    case = ("ckpt", 1, 32, L, 16, "variable", 1, True, True, True, _BF16, None)
    ext = emulated_long_backend._EXT
    (out_l, last_l, ck_l), (out_g, last_g, ck_g) = _long_and_general_forward(
        ext, _long_inputs(case, seed=33), K, monkeypatch
    )
    assert ext.calls == ["fwd_long", "fwd"] and ext.tile_minb == [4 if fits else 0]
    assert ck_l.shape == ((L + K - 1) // K - 1, 16, 32) and not ck_l.isnan().any()
    torch.testing.assert_close(ck_l, ck_g, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_l.float(), out_g.float(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(last_l, last_g, rtol=1e-5, atol=1e-5)


def test_emulated_tile_forward_in_training(monkeypatch):
    """Every gradient through the staged forward's checkpoints and the general backward."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    monkeypatch.setattr(scan_cuda, "_EXT", EmulatedExtension())
    monkeypatch.delenv("SSM_KERNELS_SCAN_LONG", raising=False)
    monkeypatch.delenv("SSM_KERNELS_SCAN_STATE_TILE", raising=False)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_FWD", "1")
    case = ("tile-train", 1, 32, 136, 16, "variable", 1, True, True, True, _BF16, None)
    _check_against_reference(scan_cuda, _long_inputs(case, seed=34), softplus=True, with_last=True)
    assert scan_cuda._EXT.calls == ["fwd_state", "bwd"]
    assert scan_cuda._EXT.tile_minb == [4]


def test_tile_forward_register_cap_rule():
    """The 5-block cap where the grid of 32-row blocks exceeds 4 per SM (132 SMs: 528 blocks): the raw EEG shape (608
    blocks) takes it, batch 8 x dim 2048 (512 blocks) does not."""
    lib = _lib()
    assert lib.emu_tile_min_blocks(ctypes.c_longlong(304 * 64), 132) == 5
    assert lib.emu_tile_min_blocks(ctypes.c_longlong(8 * 2048), 132) == 4
    assert lib.emu_tile_min_blocks(ctypes.c_longlong(528 * 32), 132) == 4
    assert lib.emu_tile_min_blocks(ctypes.c_longlong(528 * 32 + 1), 132) == 5


# Training through the state-lane forward (SSM_KERNELS_SCAN_STATE_FWD=1): its checkpoints at the general backward's
# K (K = choose_chunk, no multiple of the 8-step chunk for N 33) feed the general backward.
STATE_TRAIN_CASES = [
    ("L136-N16-bf16", 1, 4, 136, 16, "variable", 1, True, True, True, _BF16, None),
    ("L130-N33-grouped-fp16", 1, 4, 130, 33, "grouped", 2, True, True, False, _F16, _F32),
]


@pytest.mark.parametrize("case", STATE_TRAIN_CASES, ids=[c[0] for c in STATE_TRAIN_CASES])
def test_emulated_state_forward_in_training(case, monkeypatch):
    """Every gradient through the state-lane forward's checkpoints and the general backward."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    monkeypatch.setattr(scan_cuda, "_EXT", EmulatedExtension())
    monkeypatch.delenv("SSM_KERNELS_SCAN_LONG", raising=False)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_FWD", "1")
    _check_against_reference(scan_cuda, _long_inputs(case, seed=12), softplus=case[9], with_last=True)
    assert scan_cuda._EXT.calls == ["fwd_state", "bwd"]
    assert scan_cuda._EXT.long_fwd == [("state", 4)]


# The state-lane backward (SSM_KERNELS_SCAN_STATE_BWD=1 forces it): padded N 16, groups of 32 channels or
# time-invariant B / C; the general path's chunks (K from choose_chunk) and partial layout.
STATE_BWD_CASES = [
    ("L40-N16-fp32", 2, 32, 40, 16, "variable", 1, True, True, True, _F32, None),
    ("L37-N10-grouped-bf16", 1, 64, 37, 10, "grouped", 2, True, True, True, _BF16, None),
    ("L33-N16-constant-fp16", 1, 40, 33, 16, "constant", 1, False, True, False, _F16, None),
]


@pytest.mark.parametrize("K", [None, 8, 5], ids=["K-default", "K8", "K5"])
@pytest.mark.parametrize("case", STATE_BWD_CASES, ids=[c[0] for c in STATE_BWD_CASES])
def test_emulated_state_backward_matches_reference(case, K, monkeypatch):
    """Output, last state and every gradient (incl. initial state and dlast) through the state-lane backward, with
    the emulator's chunk (16: 16-step chunks held) and with K 8 and 5 (8-step chunks held, partly used)."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    ext = EmulatedExtension()
    if K is not None:
        monkeypatch.setattr(ext, "choose_chunk", lambda N, L, nrows: K)
    monkeypatch.setattr(scan_cuda, "_EXT", ext)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD", "1")
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD_TILE", "0")  # the unstaged kernel (the staged one: below)
    _check_against_reference(scan_cuda, _long_inputs(case, seed=13), softplus=case[9], with_last=True, seed=14)
    assert scan_cuda._EXT.calls == ["fwd", "bwd_state"]


# The staged backward (the state-lane backward's default where it fits): variable B / C in groups of 32 channels,
# K <= 8.
TILE_BWD_CASES = [
    ("L40-N16-fp32", 2, 32, 40, 16, "variable", 1, True, True, True, _F32, None),  # 5 chunks of 8
    ("L37-N10-grouped-bf16", 1, 64, 37, 10, "grouped", 2, True, True, True, _BF16, None),  # padded N, a 5-step tail
    ("L29-N16-fp16-fp32bc", 1, 32, 29, 16, "variable", 1, False, True, False, _F16, _F32),  # no softplus
    ("L21-N16-plain", 1, 32, 21, 16, "variable", 1, False, False, True, _F32, None),  # no z / D / delta_bias
]


@pytest.mark.parametrize("K", [8, 5], ids=["K8", "K5"])
@pytest.mark.parametrize("case", TILE_BWD_CASES, ids=[c[0] for c in TILE_BWD_CASES])
def test_emulated_tile_backward_matches_reference(case, K, monkeypatch):
    """Output, last state and every gradient (initial state and dlast included) through the staged backward, with
    8-step chunks and with K 5 (chunks partly used)."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    ext = EmulatedExtension()
    monkeypatch.setattr(ext, "choose_chunk", lambda N, L, nrows: K)
    monkeypatch.setattr(scan_cuda, "_EXT", ext)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD", "1")
    monkeypatch.delenv("SSM_KERNELS_SCAN_STATE_BWD_TILE", raising=False)
    _check_against_reference(scan_cuda, _long_inputs(case, seed=35), softplus=case[9], with_last=True, seed=36)
    assert scan_cuda._EXT.calls == ["fwd", "bwd_tile"]


def test_emulated_tile_backward_time_segments(monkeypatch):
    """The staged backward over time segments (SSM_KERNELS_SCAN_BWD_SEGMENTS=3: each segment starts from the later
    segments' maps) against the reference; a call that does not fit (time-invariant B) keeps the state-lane kernel."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    ext = EmulatedExtension()
    monkeypatch.setattr(ext, "choose_chunk", lambda N, L, nrows: 8)
    monkeypatch.setattr(scan_cuda, "_EXT", ext)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD", "1")
    monkeypatch.delenv("SSM_KERNELS_SCAN_STATE_BWD_TILE", raising=False)
    monkeypatch.setenv("SSM_KERNELS_SCAN_BWD_SEGMENTS", "3")
    case = ("segments", 1, 32, 70, 16, "variable", 1, True, True, True, _F32, None)
    _check_against_reference(scan_cuda, _long_inputs(case, seed=37), softplus=True, with_last=True, seed=38)
    assert ext.calls == ["fwd", "bwd_tile"] and ext.segments == [3]
    ext.calls.clear()
    case = ("constant", 1, 32, 40, 16, "constant", 1, True, True, True, _F32, None)
    _check_against_reference(scan_cuda, _long_inputs(case, seed=39), softplus=True, with_last=True, seed=40)
    assert ext.calls == ["fwd", "bwd_state"]


@pytest.mark.parametrize(
    "K,flag,tile,want",
    [(8, None, None, "bwd_tile"), (5, None, None, "bwd_tile"), (8, None, "0", "bwd_state"), (16, None, None, "bwd"),
     (8, "0", None, "bwd"), (16, "1", None, "bwd_state"), (16, "1", "1", "bwd_state")],
)  # fmt: skip
def test_emulated_state_backward_selection(K, flag, tile, want, monkeypatch):
    """Where the state-lane backward runs: by default for chunks of K <= 8 (ssk::state_bwd_auto), any K when
    forced, never with SSM_KERNELS_SCAN_STATE_BWD=0; its staged kernel where that fits (K <= 8) unless
    SSM_KERNELS_SCAN_STATE_BWD_TILE=0; gradients checked either way."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    ext = EmulatedExtension()
    monkeypatch.setattr(ext, "choose_chunk", lambda N, L, nrows: K)
    monkeypatch.setattr(scan_cuda, "_EXT", ext)
    for name, value in (("SSM_KERNELS_SCAN_STATE_BWD", flag), ("SSM_KERNELS_SCAN_STATE_BWD_TILE", tile)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    _check_against_reference(scan_cuda, _long_inputs(STATE_BWD_CASES[1], seed=17), softplus=True, with_last=True,
                             seed=18)  # fmt: skip
    assert ext.calls == ["fwd", want]


@pytest.mark.parametrize("segments", ["1", "3"])
@pytest.mark.parametrize("case", STATE_BWD_CASES, ids=[c[0] for c in STATE_BWD_CASES])
def test_emulated_state_backward_time_segments(case, segments, monkeypatch):
    """The state-lane backward over time segments (each starting from the later segments' maps) and without them,
    K 5 (segments end inside the emulator's 8-step chunks): output, last state and every gradient."""
    from ssm_kernels.selective_scan import cuda as scan_cuda

    ext = EmulatedExtension()
    monkeypatch.setattr(ext, "choose_chunk", lambda N, L, nrows: 5)
    monkeypatch.setattr(scan_cuda, "_EXT", ext)
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD", "1")
    monkeypatch.setenv("SSM_KERNELS_SCAN_STATE_BWD_TILE", "0")
    monkeypatch.setenv("SSM_KERNELS_SCAN_BWD_SEGMENTS", segments)
    _check_against_reference(scan_cuda, _long_inputs(case, seed=15), softplus=case[9], with_last=True, seed=16)
    assert scan_cuda._EXT.calls == ["fwd", "bwd_state"]
    assert ext.segments[-1] == int(segments), ext.segments


@pytest.mark.parametrize(
    "nrows,N,bc16,training,tile,want",
    [
        (16384, 16, True, False, True, True),
        (8192, 16, True, False, False, True),
        (2048, 64, True, False, False, True),
        (19456, 16, False, False, False, False),
        (19456, 16, False, False, True, True),
        (19456, 16, False, True, False, True),
        (8192, 8, True, False, False, False),
        (4096, 16, True, False, True, False),
        (4096, 16, False, True, False, False),
        (4096, 4, True, True, False, False),
    ],  # fmt: skip
)
def test_state_forward_rule(nrows, N, bc16, training, tile, want):
    """Where the state-lane forward runs by default (ssk::state_fwd_auto, 132 SMs): the H200 sweeps' winners (bf16
    N 16 from 8,192 rows, N 64; in training also fp32 B / C; with the staged kernel fp32 B / C in inference too) and
    losers (fp32 B / C in inference without the staged kernel, N 8, 16,384 threads or fewer)."""
    got = _lib().emu_state_fwd_auto(ctypes.c_longlong(nrows), N, int(bc16), EMU_SMS, int(training), int(tile))
    assert (got == 1) == want


# group sizes 5 and 3 (no multiple of 4 channels): the long forward writes checkpoints for the general backward
LONG_FWD_GENERAL_BWD = [
    LONG_CASES[0],
    ("L200-N8-groups-of-3", 1, 6, 200, 8, "grouped", 2, True, True, True, _BF16, None),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", LONG_FWD_GENERAL_BWD, ids=[c[0] for c in LONG_FWD_GENERAL_BWD])
def test_emulated_long_forward_with_general_backward(case, emulated_long_backend):
    """Every gradient through the long forward's checkpoints and the general backward."""
    if not _enabled():
        pytest.skip("set SSM_KERNELS_EMULATE=1")
    x = _long_inputs(case, seed=9)
    _check_against_reference(emulated_long_backend, x, softplus=case[9], with_last=True)
    assert emulated_long_backend._EXT.calls == ["fwd_long", "bwd"]


# Long backward (K = 128 checkpoints from the long forward): rows per warp and chunk edges.
# id, batch, dim, L, N, bc, groups, init, z/D/bias, softplus, dtype, bc_dtype, expected rows per warp
LONG_BWD_CASES = [
    # 3 chunks (128, 128, 44); 8 rows per group: one block of 2 rows per warp per (b, group)
    ("L300-N16-rw2", 2, 8, 300, 16, "variable", 1, True, True, True, _F32, None, 2),
    # grouped (4 channels per group): one row per warp; bf16 vectors; N 5 padded to 8
    ("L256-N5-grouped-bf16", 1, 8, 256, 5, "grouped", 2, False, True, True, _BF16, None, 1),
    # time-invariant B / C: any dim; partial block of rows (dim 6 = 1 block of 8 rows with rw 2... capped)
    ("L130-N4-constant", 2, 3, 130, 4, "constant", 1, True, False, False, _F32, None, 8),
    # 32 channels in one group: 8 rows per warp, every row of a block in one partial; fp16, fp32 B / C, NP 64
    ("L140-N33-rw8-fp16", 1, 32, 140, 33, "variable", 1, True, True, True, _F16, _F32, 8),
]


@pytest.mark.parametrize("case", LONG_BWD_CASES, ids=[c[0] for c in LONG_BWD_CASES])
def test_emulated_long_backward_matches_reference(case, emulated_long_backend):
    """Output, last state and every gradient (incl. initial state and dlast) through the long kernel pair."""
    x = _long_inputs(case[:12], seed=10)
    _check_against_reference(emulated_long_backend, x, softplus=case[9], with_last=True, seed=11)
    assert emulated_long_backend._EXT.calls == ["fwd_long", "bwd_long"]
    assert emulated_long_backend._EXT.long_rw == [case[12]]


LONG_SWEEP = [
    # many chunks (8 x 128 + 1), fp32, rows per warp forced below
    ("L1025-N16", 1, 16, 1025, 16, "variable", 1, True, True, True, _F32, None, None),
    ("L384-N32-bf16-nosoftplus", 2, 8, 384, 32, "variable", 1, False, True, False, _BF16, None, None),
    ("L200-N16-fp16-noz", 1, 12, 200, 16, "grouped", 3, True, False, True, _F16, None, None),
    ("L131-N1-grouped-per-4", 2, 16, 131, 1, "grouped", 4, True, True, True, _F32, None, None),
]


@pytest.mark.slow
@pytest.mark.parametrize("rw", ["1", "2", "4"])
@pytest.mark.parametrize("case", LONG_SWEEP, ids=[c[0] for c in LONG_SWEEP])
def test_emulated_long_backward_sweep(case, rw, emulated_long_backend, monkeypatch):
    """Wider sweep of the long kernel pair with each rows-per-warp setting the group sizes allow."""
    x = _long_inputs(case[:12], seed=12)
    groups = 1 if case[5] == "variable" else case[6]
    if (case[2] // groups) % (LONG_WARPS * int(rw)):
        pytest.skip(f"group size {case[2] // groups} is no multiple of {LONG_WARPS * int(rw)} rows")
    monkeypatch.setenv("SSM_KERNELS_SCAN_LONG_RW", rw)
    _check_against_reference(emulated_long_backend, x, softplus=case[9], with_last=True, seed=13)
    assert emulated_long_backend._EXT.calls == ["fwd_long", "bwd_long"]
    assert emulated_long_backend._EXT.long_rw == [int(rw)]


# Short kernels with B / C staged in shared memory (SSM_KERNELS_SCAN_SHORT_STAGE=1): blocks of rows in one (b, group).
# (case, expected staged flags per call)
SHORT_STAGED = [
    # TUSZ: 64 channels = 2 blocks of 32 rows per batch; fp32
    (("tusz-dim64-L10-N16", 3, 64, 10, 16, "variable", 1, True, True, True, _F32, None, True), (1, 1)),
    # bf16 B / C in bf16, group of 64 channels; z / D / bias off
    (("L16-N16-grouped-bf16", 1, 128, 16, 16, "grouped", 2, True, False, True, _BF16, None, True), (1, 1)),
    # NP 8 with groups of 64 channels; fp16 with fp32 B / C
    (("L7-N5-groups-of-64", 2, 128, 7, 5, "grouped", 2, True, True, True, _F16, _F32, True), (1, 1)),
    # NP 64: no staged instantiation (the flag is ignored)
    (("L7-N33-not-staged", 2, 16, 7, 33, "grouped", 2, True, True, True, _F16, _F32, True), (0, 0)),
    # NP 8 (2 lanes per row, 64 rows per block), L 1
    (("L1-N5-dim64", 2, 64, 1, 5, "variable", 1, False, True, False, _F32, None, False), (1, 1)),
    # dim 20: blocks straddle batches, nothing staged (the flag is ignored)
    (("dim20-not-staged", 3, 20, 10, 16, "variable", 1, True, True, True, _F32, None, True), (0, 0)),
]


@pytest.mark.parametrize("case,flags", SHORT_STAGED, ids=[c[0][0] for c in SHORT_STAGED])
def test_emulated_short_kernels_with_staged_bc(case, flags, emulated_short_backend, monkeypatch):
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_STAGE", "1")
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT_ROWS", "0")  # staging is an option of the lane-split kernels
    _short_case(case, emulated_short_backend, monkeypatch)
    assert emulated_short_backend._EXT.staged == [flags, flags]


# General backward over time segments (scan_bwd_seg_kernel, then one grid row per segment). EMU_SLOTS makes small
# grids split by default, as few rows do on a GPU.
# id, batch, dim, L, N, bc, groups, init, z/D/bias, softplus, dtype, bc_dtype, SSM_KERNELS_SCAN_BWD_SEGMENTS,
# expected segments
SEGMENT_CASES = [
    # K 16: 5 chunks; two row blocks on 4 slots: the default gives 2 segments (3 and 2 chunks)
    ("L70-N16-default", 1, 80, 70, 16, "variable", 1, True, True, True, _F32, None, None, 2),
    # 3 chunks, one per segment, the last one partial; groups of 11 channels; bf16 with fp32 B / C
    ("L45-N5-grouped-bf16", 2, 33, 45, 5, "grouped", 3, False, True, True, _BF16, _F32, "3", 3),
    # time-invariant B / C (per-row partials per segment), nothing optional, no softplus; 16 asked, 3 chunks
    ("L37-N4-constant-plain", 1, 5, 37, 4, "constant", 1, True, False, False, _F32, None, "16", 3),
    # N 33 (padded 64): K 2, so segments of 6 steps end inside the 8-step runs of the segment kernel; fp16
    ("L23-N33-K2-fp16", 1, 8, 23, 33, "variable", 1, True, True, True, _F16, None, None, 4),
]


@pytest.mark.parametrize("case", SEGMENT_CASES, ids=[c[0] for c in SEGMENT_CASES])
def test_emulated_backward_segments_match_reference(case, emulated_cuda_backend, monkeypatch):
    """Output, last state and every gradient through the general forward and backward split into time segments
    (the initial state enters the forward's first segment, dlast the backward's last), against the reference."""
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT", "0")
    if case[12] is None:
        monkeypatch.delenv("SSM_KERNELS_SCAN_BWD_SEGMENTS", raising=False)
    else:
        monkeypatch.setenv("SSM_KERNELS_SCAN_BWD_SEGMENTS", case[12])
    x = _long_inputs(case[:12], seed=12)
    _check_against_reference(emulated_cuda_backend, x, softplus=case[9], with_last=True, seed=13)
    ext = emulated_cuda_backend._EXT
    assert ext.calls == ["fwd", "bwd"]
    assert ext.segments == [case[13]] and ext.fwd_segments == [case[13]]


def test_emulated_backward_segments_off_and_on_agree(emulated_cuda_backend, monkeypatch):
    """The same forward and backward without segments and with 2 and 6 (one per chunk) of them: equal up to fp32
    rounding (the segments change where per-row partials are summed and how the state entering a segment is
    formed), the forward's segments switched off on their own, and no segments with cu_seqlens."""
    monkeypatch.setenv("SSM_KERNELS_SCAN_SHORT", "0")
    case = ("seg-agree", 2, 3, 90, 8, "variable", 1, True, True, True, _F32, None)
    grads = {}
    runs = [("1", "1"), ("2", "1"), ("6", "1"), ("6", "0")]  # (segments, forward segments on)
    for s, fwd_on in runs:
        monkeypatch.setenv("SSM_KERNELS_SCAN_BWD_SEGMENTS", s)
        monkeypatch.setenv("SSM_KERNELS_SCAN_FWD_SEGMENTS", fwd_on)
        x = {k: (v.requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
             for k, v in _long_inputs(case, seed=14).items()}  # fmt: skip
        out = emulated_cuda_backend.selective_scan_cuda(
            None, x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, False,
            x["initial_state"], None)  # fmt: skip
        out.square().sum().backward()
        grads[s, fwd_on] = {"out": out.detach()}
        grads[s, fwd_on].update({k: v.grad for k, v in x.items() if isinstance(v, torch.Tensor) and v.grad is not None})
    assert emulated_cuda_backend._EXT.segments == [1, 2, 6, 6]
    assert emulated_cuda_backend._EXT.fwd_segments == [1, 2, 6, 1]
    for run in runs[1:]:
        for k, g in grads["1", "1"].items():
            torch.testing.assert_close(
                grads[run][k], g, rtol=1e-5, atol=1e-5, msg=lambda m, k=k, r=run: f"{k}, {r}: {m}"
            )

    emulated_cuda_backend._EXT.segments.clear()
    emulated_cuda_backend._EXT.fwd_segments.clear()
    packed = make_scan_inputs(1, 3, 60, 8, cu_seqlens=[0, 25, 60], with_initial_state=True, seed=15,
                              requires_grad=True)  # fmt: skip
    out = emulated_cuda_backend.selective_scan_cuda(
        None, packed["u"], packed["delta"], packed["A"], packed["B"], packed["C"], packed["D"], packed["z"],
        packed["delta_bias"], True, False, packed["initial_state"], packed["cu_seqlens"])  # fmt: skip
    out.sum().backward()
    assert emulated_cuda_backend._EXT.segments == [], "packed sequences take no segments"
    assert emulated_cuda_backend._EXT.fwd_segments == [1]


def test_backward_segment_count_model():
    """bwd_segments: none when the rows fill the GPU or for one chunk; for the raw EEG shape on an H200 (304 row
    blocks, 4 x 132 resident) enough segments for several balanced waves; at most one per chunk and 16."""
    lib = _lib()
    ll = ctypes.c_longlong
    assert lib.emu_bwd_segments(ll(600), 250, ll(528)) == 1
    assert lib.emu_bwd_segments(ll(10), 1, ll(528)) == 1
    assert 3 <= lib.emu_bwd_segments(ll(304), 250, ll(528)) <= 16
    assert lib.emu_bwd_segments(ll(1), 3, ll(528)) == 3
    assert lib.emu_bwd_segments(ll(1), 1000, ll(528)) == 16
    assert [lib.emu_seg_chunks_for(250, s) for s in (1, 2, 12)] == [250, 125, 21]


def test_tile_backward_segment_count_model():
    """tile_bwd_segments (plan_segments model 2): one segment when the row blocks fill one wave (the 8 x 2048 x 2048
    shape: 512 blocks on 4 x 132 slots), where a wave more would cost the segment maps for nothing; for the raw EEG
    shape (608 blocks, 1.15 waves) segments that shorten the tail; many for few rows; forced counts kept."""
    lib = _lib()
    ll = ctypes.c_longlong
    chunks = ctypes.c_int(0)

    def plan(rowblocks, nchunks, forced=0):
        return lib.emu_plan_segments(nchunks, forced, ll(rowblocks), ll(528), 2, ctypes.byref(chunks))

    assert plan(512, 256) == 1
    assert plan(528, 256) == 1
    assert 4 <= plan(608, 250) <= 8
    assert plan(1, 1000) == 16
    assert plan(608, 1) == 1
    assert plan(512, 256, forced=3) == 3 and chunks.value == 86
