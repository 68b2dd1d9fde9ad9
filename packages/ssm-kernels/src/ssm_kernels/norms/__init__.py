"""Fused RMSNorm / LayerNorm (with residual add and prenorm) and gated RMSNorm."""
