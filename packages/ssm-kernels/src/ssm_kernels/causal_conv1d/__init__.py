"""Causal depthwise conv1d (the short convolution in front of Mamba's scan).

``interface`` holds the public, dispatching functions; ``reference`` the pure-PyTorch oracle;
``triton`` the fast path (imported only when used).
"""
