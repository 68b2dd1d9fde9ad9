"""The TGMamba block's fused path on the Triton graph scan, run by the CPU interpreter.

Marker ``interpret``: runs only with ``TRITON_INTERPRET=1`` set before Python starts and triton installed. The
block passes its graphconv / chebconv / none operators without the leading identity (the scan's implicit identity
first operator), so this covers the kernels' path that skips those vertex products, end to end. The input graph
convolution runs on the channel-major layout, through the Triton vertex-mixing kernels.
"""

from __future__ import annotations

import pytest
from test_tgm_block import FUSED
from test_tgm_block import test_fused_fp32_against_fp64_reference as _fused_vs_reference

from ssm_kernels.backend import triton_interpret
from ssm_kernels.testing import requires_triton

pytestmark = [
    pytest.mark.interpret,
    requires_triton,
    pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1 (CPU tensors on Triton kernels)"),
]


@pytest.mark.parametrize("conv_type", FUSED)
def test_fused_block_on_triton_graph_scan(monkeypatch, conv_type):
    import ssm_kernels.graph_scan.triton as gst
    import ssm_kernels.vertex_mix.triton as vmt

    monkeypatch.setenv("SSM_KERNELS_BACKEND_GRAPH_SCAN", "triton")
    monkeypatch.setenv("TGMAMBA_INPUT_CONV_LAYOUT", "channels")
    calls, mixes = [], []
    real, real_mix = gst._apply, vmt._mix
    monkeypatch.setattr(gst, "_apply", lambda *a, **k: calls.append(a[6].shape[0] - a[5].shape[2]) or real(*a, **k))
    monkeypatch.setattr(vmt, "_mix", lambda *a, **k: mixes.append(k["transpose"]) or real_mix(*a, **k))
    _fused_vs_reference(conv_type)
    assert calls, "the fused path did not reach the Triton graph scan"
    # forward, and dx in backward (transposed), on the Triton vertex-mixing kernel
    assert conv_type == "none" or set(mixes) == {False, True}, mixes
    # W_A has one operator more than mix_A exactly where the operators start with the identity
    assert set(calls) == {0 if conv_type == "gcnconv" else 1}
