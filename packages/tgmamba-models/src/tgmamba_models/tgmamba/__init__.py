"""TGMamba: the graph-mixed Mamba block, its edge learner, the classifier and their configs."""

from .block import TGMamba, TGMambaInferenceCache
from .classifier import TGMambaClassifier
from .config import TGMambaClassifierConfig, TGMambaConfig
from .edge_learner import EdgeLearner

__all__ = [
    "EdgeLearner",
    "TGMamba",
    "TGMambaClassifier",
    "TGMambaClassifierConfig",
    "TGMambaConfig",
    "TGMambaInferenceCache",
]
