"""Mamba-family mixers built on :mod:`ssm_kernels`: Mamba (selective SSM), Mamba-2 (SSD), the residual Block.

Submodules are imported on demand; the public names are re-exported lazily from ``tgmamba_models``.
"""
