"""``ssk::ScanParams`` (``selective_scan/csrc/selective_scan.h``) as a ctypes structure, for code that launches the
selective-scan kernels without the torch extension: the host emulation of the kernels
(``tests/selective_scan/test_selective_scan_emulated.py``) and the cubin timing tool
(``benchmarks/gpu_cubin_timing.py``). The field order and types must match the C++ struct; the emulator checks the
size against ``sizeof(ssk::ScanParams)``.
"""

from __future__ import annotations

import ctypes

_P = ctypes.c_void_p
_I = ctypes.c_int


class ScanParams(ctypes.Structure):
    _fields_ = [
        *[(n, _I) for n in ("batch", "dim", "L", "N", "nrows", "nseq", "softplus", "bc_dtype")],
        *[(n, _P) for n in ("u", "delta", "z", "A", "B", "C")],
        ("b_groups", _I),
        ("c_groups", _I),
        *[(n, _P) for n in ("D", "delta_bias", "h0", "cu", "out", "last", "ckpt")],
        ("K", _I),
        ("tile", _I),
        *[
            (n, _P)
            for n in ("dout", "dlast", "du", "ddelta", "dz", "dA_part", "dD_part", "ddb_part", "dB_part", "dC_part")
        ],
        ("rp_stride", _I),
        *[(n, _I) for n in ("npart_b", "npart_c", "uniform_b", "uniform_c", "smem_b", "smem_c")],
        ("dh0", _P),
        ("long_rw", _I),
        ("short_stage_b", _I),
        ("short_stage_c", _I),
        ("short_minb", _I),
        ("short_rows", _I),
        ("long_minb", _I),
        ("nseg", _I),
        ("seg_chunks", _I),
        ("seg", _P),
        ("long_fwd", _I),
        ("long_ns", _I),
        ("tile_minb", _I),
    ]
