"""SSD (Mamba-2's state-space duality): the chunked scan ``mamba_chunk_scan_combined``.

``minimal`` holds the minimal SSD listing of the Mamba-2 paper (``ssd_minimal_discrete``);
``reference`` the chunked pure-PyTorch implementation of the full op (``ssd_chunk_scan_ref``);
``triton_ssd`` the Triton kernels (imported only when used); ``interface`` the dispatching
public function ``mamba_chunk_scan_combined``.
"""
