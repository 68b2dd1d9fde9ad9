"""ssm_kernels: selective-scan family kernels with pure-PyTorch references.

Every public op has a reference implementation (``*_ref``) that runs anywhere torch runs,
and fast paths (CUDA C++ compiled just in time, or Triton) that are picked automatically for
CUDA tensors. ``SSM_KERNELS_BACKEND`` (``auto``, ``reference``, ``triton``, ``cuda``) forces a
backend globally; see :mod:`ssm_kernels.backend`.

Nothing here touches a GPU, imports Triton or compiles anything at import time: the public
names below are resolved lazily on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# public name -> module that defines it (relative to this package)
_EXPORTS: dict[str, str] = {
    # graph selective scan (TGMamba's core op)
    "graph_selective_scan_fn": ".graph_scan.interface",
    "graph_selective_scan_ref": ".graph_scan.reference",
    # vertex mixing on the channel-major layout (TGMamba's input-side graph convolution)
    "vertex_mix_fn": ".vertex_mix.interface",
    "vertex_mix_ref": ".vertex_mix.reference",
    # learned per-step edge weights (TGMamba's EdgeLearner graph)
    "edge_weights_fn": ".edge_weights.interface",
    "edge_weights_ref": ".edge_weights.reference",
    # Mamba-1 selective scan
    "selective_scan_fn": ".selective_scan.interface",
    "selective_scan_ref": ".selective_scan.reference",
    "mamba_inner_fn": ".selective_scan.interface",
    "mamba_inner_ref": ".selective_scan.reference",
    # causal depthwise conv1d
    "causal_conv1d_fn": ".causal_conv1d.interface",
    "causal_conv1d_update": ".causal_conv1d.interface",
    "causal_conv1d_ref": ".causal_conv1d.reference",
    "causal_conv1d_update_ref": ".causal_conv1d.reference",
    # SSD (Mamba-2)
    "mamba_chunk_scan_combined": ".ssd.interface",
    "ssd_chunk_scan_ref": ".ssd.reference",
    "ssd_minimal_discrete": ".ssd.minimal",
    # decoding step
    "selective_state_update": ".state_update.interface",
    "selective_state_update_ref": ".state_update.reference",
    # norms
    "RMSNormGated": ".norms.interface",
    "RMSNorm": ".norms.interface",
    "LayerNorm": ".norms.interface",
    "rms_norm_fn": ".norms.interface",
    "layer_norm_fn": ".norms.interface",
    "rms_norm_ref": ".norms.reference",
    "layer_norm_ref": ".norms.reference",
    "rms_norm_gated_ref": ".norms.reference",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ssm_kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
