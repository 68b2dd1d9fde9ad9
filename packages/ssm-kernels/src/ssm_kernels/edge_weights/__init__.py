"""Learned per-step edge weights: a thresholded symmetric attention graph re-weighted by a sigmoid similarity."""

from .interface import edge_weights_fn
from .reference import edge_weights_ref

__all__ = ["edge_weights_fn", "edge_weights_ref"]
