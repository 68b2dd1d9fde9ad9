"""How many kernels the TGMamba block's fused path launches around its kernels (its host cost on a GPU).

At the TUSZ shape the eager block is bound by launches (about 330 per fwd+bwd on an H200, each tens of us of
host time). Here the ssm-kernels ops are replaced by stand-ins that keep every input in the autograd graph, and
every other aten op that does work (not a view) is counted. After the run17 trims (``bound_scale`` over the
stacked operators, one-kernel inverse square roots, self loops and weak attention edges masked instead of
multiplied or selected against zeros) the forward launched 97 and forward+backward 240, against 106 and 265
before; with the edge learner's graph one op (``ssm_kernels.edge_weights_fn``, one Triton kernel each way on CUDA)
85 and 206 (torch 2.13, CPU). A change that adds launches fails here first (3 of slack).
"""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tgmamba_models.tgmamba.block as block_mod
import tgmamba_models.tgmamba.edge_learner as edge_mod
from tgmamba_models import TGMamba

VIEWS = {
    "view", "reshape", "transpose", "permute", "expand", "unsqueeze", "squeeze", "slice", "select", "as_strided",
    "t", "split", "chunk", "unbind", "narrow", "alias", "detach", "diagonal", "split_with_sizes", "flatten",
    "unflatten", "empty", "empty_like", "empty_strided", "lift_fresh", "_unsafe_view", "view_as", "expand_as",
    "_reshape_alias", "new_empty", "new_empty_strided",
}  # fmt: skip


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def _stand_ins(monkeypatch):
    """One op each for the scan, the edge weights, the causal conv and the gated norm (their own launches are not
    glue)."""

    def scan(u, delta, A, B, C, mix_A, W_A, mix_C=None, W_C=None, D=None, z=None, delta_bias=None, **kw):
        # every input stays in the autograd graph, so the backward runs through the operators' construction too
        rest = [t for t in (A, B, C, mix_A, W_A, mix_C, W_C, D, z, delta_bias) if t is not None]
        return u * delta + torch.stack([t.sum() for t in rest]).sum()

    def edges(q, k, g, adj0=None, skip=None, **kw):
        emb = q if q is not None else g
        rest = [t for t in (q, k, g, adj0, skip) if t is not None]
        return torch.stack([t.sum() for t in rest]).sum().expand(*emb.shape[:3], emb.shape[2])

    monkeypatch.setattr(block_mod, "graph_selective_scan_fn", scan)
    monkeypatch.setattr(edge_mod, "edge_weights_fn", edges)
    monkeypatch.setattr(block_mod, "causal_conv1d_fn", lambda x, w, b=None, activation=None: x * 1.0)


def test_fused_path_glue_launches(monkeypatch):
    _stand_ins(monkeypatch)
    torch.manual_seed(0)
    V, batch, L = 19, 2, 10
    block = TGMamba(d_model=32, d_state=16, num_vertices=V, conv_type="graphconv", edge_learner_attention=True,
                    edge_learner_time_varying=True, attn_time_varying=True)  # fmt: skip
    block.validate_inputs = False
    object.__setattr__(block, "_norm_out", lambda y, z: block.out_proj(y * z))  # the gated norm: one op
    x = torch.randn(batch * V, L, 32, requires_grad=True)
    src = torch.arange(V)
    ei = torch.stack([src, (src + 1) % V])
    ei = torch.cat([ei, ei.flip(0)], 1)
    ei = torch.cat([ei + b * V for b in range(batch)], 1)
    block(x, ei, path="fused").sum().backward()  # warm-up (lazy PyG init)
    fwd, both = _Count(), _Count()
    with fwd:
        y = block(x, ei, path="fused")
    with both:
        y = block(x, ei, path="fused")
        y.backward(torch.ones_like(y))
    n_fwd, n_both = sum(fwd.ops.values()), sum(both.ops.values())
    assert n_fwd <= 85 + 3, f"forward glue launches {n_fwd}: {fwd.ops.most_common(12)}"
    assert n_both <= 206 + 3, f"fwd+bwd glue launches {n_both}: {both.ops.most_common(12)}"
