"""The time-looping references must keep their backward linear in L.

Indexing ``x[..., t]`` inside the loop adds one SelectBackward node per input and step, each of which allocates
and zero-fills a full-length gradient (a backward quadratic in L: 54 s instead of 0.4 s at L = 2048). The
references take per-step views with one ``unbind`` per input instead: the number of select nodes must not grow
with L.
"""

from __future__ import annotations

import pytest

from ssm_kernels import graph_selective_scan_ref, selective_scan_ref
from ssm_kernels.testing import autograd_node_count as count_nodes
from ssm_kernels.testing.graph_scan import make_graph_scan_inputs
from ssm_kernels.testing.selective_scan import make_scan_inputs


@pytest.mark.parametrize("T", ["1", "L"])
def test_graph_scan_ref_select_nodes_do_not_grow_with_L(T):
    counts = []
    for L in (4, 16):
        kw = make_graph_scan_inputs(batch=1, V=3, D=2, N=4, L=L, K=2, T=T, mix_C=True, with_D=True, with_z=True,
                                    requires_grad=True)  # fmt: skip
        counts.append(count_nodes(graph_selective_scan_ref(**kw), "SelectBackward0"))
    assert counts[0] == counts[1], f"select nodes grow with L: {counts}"


def test_selective_scan_ref_select_nodes_do_not_grow_with_L():
    counts = []
    for L in (4, 16):
        x = make_scan_inputs(batch=1, dim=3, seqlen=L, dstate=4, requires_grad=True)
        counts.append(count_nodes(selective_scan_ref(**x, delta_softplus=True), "SelectBackward0"))
    assert counts[0] == counts[1], f"select nodes grow with L: {counts}"
