"""Selective state update: one recurrent (decoding) step of Mamba-1 / Mamba-2 (inference only)."""
