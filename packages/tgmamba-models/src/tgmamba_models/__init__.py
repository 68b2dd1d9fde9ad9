"""tgmamba_models: TGMamba (graph-mixed Mamba) and Mamba/Mamba2 modules built on ssm_kernels.

Public names are resolved lazily so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

_EXPORTS: dict[str, str] = {
    # TGMamba
    "TGMamba": ".tgmamba.block",
    "TGMambaConfig": ".tgmamba.config",
    "EdgeLearner": ".tgmamba.edge_learner",
    "TGMambaClassifier": ".tgmamba.classifier",
    "TGMambaClassifierConfig": ".tgmamba.config",
    "CUDAGraphedForward": ".cuda_graphs",
    # Mamba family
    "Mamba": ".mamba.mamba_simple",
    "Mamba2": ".mamba.mamba2",
    "Mamba2Simple": ".mamba.mamba2_simple",
    "Block": ".mamba.block",
    "ssd_minimal": ".mamba.ssd_minimal",
    # language model
    "MambaConfig": ".lm.config",
    "MambaLMHeadModel": ".lm.model",
    "GenerationConfig": ".lm.generation",
    "generate": ".lm.generation",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tgmamba_models' has no attribute {name!r}")
    mod = importlib.import_module(module, __name__)
    value = mod if name == "ssd_minimal" and not hasattr(mod, name) else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
