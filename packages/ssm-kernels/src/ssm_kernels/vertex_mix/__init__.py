"""Vertex mixing of channel-major graph signals: ``out[b, i, c, l] = sum_j mix[b, t, i, j] x[b, j, c, l]``."""

from .interface import vertex_mix_fn
from .reference import vertex_mix_ref

__all__ = ["vertex_mix_fn", "vertex_mix_ref"]
