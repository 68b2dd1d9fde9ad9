"""Triton dot products at a named precision, shared by the kernels that mix fp32 tiles (graph scan, vertex mix).

``PREC`` is one of :data:`ssm_kernels.backend.DOT_PRECISIONS` (chosen on the host by
:func:`ssm_kernels.backend.dot_precision`): Triton's own ``"ieee"``, ``"tf32"`` and ``"tf32x3"``, or ``"3xtf32"``,
three tf32 tensor-core products of operands split by bit masking. ``3xtf32`` has about fp32 accuracy like
``tf32x3`` but without its per-element inf / nan handling (a non-finite operand gives NaN where ``tf32x3`` could
give inf): 11-15% fewer SASS instructions in the graph scan's kernels (sm_90 compile).
"""

import triton
import triton.language as tl


@triton.jit
def split_tf32(x):
    """x = hi + lo with hi exact in tf32 (the low 13 mantissa bits cleared) and lo = x - hi (exact in fp32)."""
    hi = (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return hi, x - hi


@triton.jit
def dot(a, b, PREC: tl.constexpr):
    """``tl.dot(a, b)`` with fp32 accumulation at precision ``PREC`` (``"3xtf32"``: lo*hi + hi*lo + hi*hi in tf32,
    the lo*lo term dropped)."""
    if PREC == "3xtf32":
        a_hi, a_lo = split_tf32(a)
        b_hi, b_lo = split_tf32(b)
        acc = tl.dot(a_lo, b_hi, input_precision="tf32")
        acc = tl.dot(a_hi, b_lo, acc, input_precision="tf32")
        return tl.dot(a_hi, b_hi, acc, input_precision="tf32")
    else:
        return tl.dot(a, b, input_precision=PREC)
