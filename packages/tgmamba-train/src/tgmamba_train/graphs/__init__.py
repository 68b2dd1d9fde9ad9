"""Electrode graphs: standard 10-20/10-10 electrode positions and distance-kernel adjacency."""

from .distance import distance_graph, fully_connected_graph, graph_for_channels
from .electrodes import canonical_name, electrode_positions, known_electrodes

__all__ = [
    "canonical_name",
    "distance_graph",
    "electrode_positions",
    "fully_connected_graph",
    "graph_for_channels",
    "known_electrodes",
]
