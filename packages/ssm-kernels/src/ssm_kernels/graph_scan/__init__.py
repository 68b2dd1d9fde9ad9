"""Graph selective scan (TGMamba's core op): reference, Triton kernels, dispatching interface.

Import the public functions from here or from :mod:`ssm_kernels`; nothing imports Triton eagerly.
"""

from __future__ import annotations

from .interface import graph_selective_scan_fn
from .reference import check_graph_scan_inputs, graph_selective_scan_ref

__all__ = ["check_graph_scan_inputs", "graph_selective_scan_fn", "graph_selective_scan_ref"]
