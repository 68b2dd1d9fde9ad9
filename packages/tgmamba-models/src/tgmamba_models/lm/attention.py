"""Multi-head attention mixer for hybrid Mamba/attention language models (``MambaConfig.attn_layer_idx``).

Parameter names and ``attn_cfg`` keys follow the public hybrid checkpoints (e.g. ``mamba2attn``): a fused
``in_proj`` producing q, k, v (grouped-query: ``num_heads_kv`` key/value heads) and optionally a gated MLP
branch, an optional short causal convolution over q/k/v (``d_conv``), rotary embeddings on the first
``rotary_emb_dim`` dims of each head, causal scaled-dot-product attention, and ``out_proj``.

Decoding keeps a key/value cache of ``max_seqlen`` positions per layer; positions come from
``inference_params.seqlen_offset``. Because that offset changes every step, attention layers cannot be
replayed from a CUDA graph: ``generate(cg=True)`` decodes such models eagerly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MHA", "apply_rotary"]


def apply_rotary(
    x: torch.Tensor, positions: torch.Tensor, rot_dim: int, base: float, interleaved: bool
) -> torch.Tensor:
    """Rotate the first ``rot_dim`` channels of each head by position-dependent angles (RoPE).

    Non-interleaved (GPT-NeoX) rotates the pairs ``(i, i + rot_dim/2)``; interleaved (GPT-J) the pairs
    ``(2i, 2i + 1)``; the angle of pair i at position p is ``p * base ** (-2i / rot_dim)``.

    Shapes:
        x: (batch, L, heads, head_dim); positions: (L,) -> (batch, L, heads, head_dim).
    """
    if rot_dim == 0:
        return x
    half = rot_dim // 2
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = base ** (-torch.arange(0, half, device=x.device, dtype=cdt) * 2 / rot_dim)  # (half,)
    ang = positions.to(cdt)[:, None] * inv_freq[None]  # (L, half)
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]  # (1, L, 1, half)
    xr, rest = x[..., :rot_dim].to(cdt), x[..., rot_dim:]
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        rot = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    else:
        x1, x2 = xr[..., :half], xr[..., half:]
        rot = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([rot.to(x.dtype), rest], dim=-1)


class MHA(nn.Module):
    """Causal multi-head (grouped-query) attention with an optional gated-MLP branch and a decoding cache.

    Args:
        embed_dim: model width.
        num_heads: query heads; ``num_heads_kv`` key/value heads (default ``num_heads``).
        head_dim: channels per head (default ``embed_dim // num_heads``).
        mlp_dim: width of a parallel gated MLP branch (rounded up to a multiple of 256; 0 = none).
        qkv_proj_bias, out_proj_bias: biases of the projections.
        softmax_scale: default ``head_dim ** -0.5``.
        causal: causal masking.
        d_conv: width of a causal depthwise convolution over q, k, v (0 = none).
        rotary_emb_dim: rotary channels per head (0 = no rotary); ``rotary_emb_base``;
            ``rotary_emb_interleaved``.

    Shapes:
        forward: x (batch, L, embed_dim) -> (batch, L, embed_dim).
    """

    _cuda_graph_unsafe = True  # the decoding step depends on a Python-side position

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_heads_kv: int | None = None,
        head_dim: int | None = None,
        mlp_dim: int = 0,
        qkv_proj_bias: bool = True,
        out_proj_bias: bool = True,
        softmax_scale: float | None = None,
        causal: bool = True,
        layer_idx: int | None = None,
        d_conv: int = 0,
        rotary_emb_dim: int = 0,
        rotary_emb_base: float = 10000.0,
        rotary_emb_interleaved: bool = False,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.d_model = embed_dim
        self.num_heads = num_heads
        self.num_heads_kv = num_heads if num_heads_kv is None else num_heads_kv
        if self.num_heads % self.num_heads_kv != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_heads_kv ({self.num_heads_kv})")
        if head_dim is None:
            if embed_dim % num_heads != 0:
                raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
            head_dim = embed_dim // num_heads
        self.head_dim = head_dim
        if rotary_emb_dim % 2 != 0 or rotary_emb_dim > head_dim:
            raise ValueError(f"rotary_emb_dim must be even and <= head_dim ({head_dim}), got {rotary_emb_dim}")
        self.mlp_dim = math.ceil(mlp_dim / 256) * 256
        self.softmax_scale = softmax_scale
        self.causal = causal
        self.layer_idx = layer_idx
        self.d_conv = d_conv
        self.rotary_emb_dim = rotary_emb_dim
        self.rotary_emb_base = rotary_emb_base
        self.rotary_emb_interleaved = rotary_emb_interleaved
        self.qkv_dim = head_dim * (self.num_heads + 2 * self.num_heads_kv)
        out_dim = head_dim * self.num_heads
        self.in_proj = nn.Linear(embed_dim, self.qkv_dim + self.mlp_dim, bias=qkv_proj_bias, **fk)
        if d_conv > 0:
            self.conv1d = nn.Conv1d(
                self.qkv_dim, self.qkv_dim, kernel_size=d_conv, padding=d_conv - 1, groups=self.qkv_dim, **fk
            )
        self.out_proj = nn.Linear(out_dim + self.mlp_dim // 2, embed_dim, bias=out_proj_bias, **fk)

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, ...]:
        """kv_cache (batch, max_seqlen, 2, num_heads_kv, head_dim) [, conv_state (batch, qkv_dim, d_conv)]."""
        dtype = self.out_proj.weight.dtype if dtype is None else dtype
        device = self.out_proj.weight.device
        kv = torch.zeros(batch_size, max_seqlen, 2, self.num_heads_kv, self.head_dim, device=device, dtype=dtype)
        if self.d_conv > 0:
            conv = torch.zeros(batch_size, self.qkv_dim, self.d_conv, device=device, dtype=self.conv1d.weight.dtype)
            return kv, conv
        return (kv,)

    def forward(self, x: torch.Tensor, inference_params: Any = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must have shape (batch, seqlen, {self.embed_dim}), got {tuple(x.shape)}")
        batch, L, _ = x.shape
        offset = 0
        cache = None
        if inference_params is not None:
            if self.layer_idx is None:
                raise ValueError("MHA: layer_idx must be set to use an inference cache")
            store = inference_params.key_value_memory_dict
            if self.layer_idx not in store:
                store[self.layer_idx] = self.allocate_inference_cache(batch, inference_params.max_seqlen)
            cache = store[self.layer_idx]
            offset = inference_params.seqlen_offset
            if offset + L > cache[0].shape[1]:
                raise ValueError(
                    f"MHA: sequence length {offset + L} exceeds the cache's max_seqlen {cache[0].shape[1]}"
                )
        qkv = self.in_proj(x)  # (B, L, qkv_dim + mlp_dim)
        if self.mlp_dim > 0:
            qkv, x_mlp = qkv.split([self.qkv_dim, self.mlp_dim], dim=-1)
            up, gate = x_mlp.chunk(2, dim=-1)
            x_mlp = up * F.silu(gate)
        if self.d_conv > 0:
            qkv = self._conv(qkv, None if cache is None else cache[1], offset)
        hq, hkv, hd = self.num_heads, self.num_heads_kv, self.head_dim
        q, k, v = qkv.split([hq * hd, hkv * hd, hkv * hd], dim=-1)
        q = q.reshape(batch, L, hq, hd)
        k = k.reshape(batch, L, hkv, hd)
        v = v.reshape(batch, L, hkv, hd)
        positions = torch.arange(offset, offset + L, device=x.device)
        q = apply_rotary(q, positions, self.rotary_emb_dim, self.rotary_emb_base, self.rotary_emb_interleaved)
        k = apply_rotary(k, positions, self.rotary_emb_dim, self.rotary_emb_base, self.rotary_emb_interleaved)
        if cache is not None:
            kv = cache[0]
            kv[:, offset : offset + L, 0] = k.to(kv.dtype)
            kv[:, offset : offset + L, 1] = v.to(kv.dtype)
            k, v = kv[:, : offset + L, 0].to(q.dtype), kv[:, : offset + L, 1].to(q.dtype)
        T = k.shape[1]
        rep = hq // hkv
        qh = q.transpose(1, 2)  # (B, Hq, L, hd)
        kh = k.transpose(1, 2).repeat_interleave(rep, dim=1)  # (B, Hq, T, hd)
        vh = v.transpose(1, 2).repeat_interleave(rep, dim=1)
        mask = None
        if self.causal and L > 1:
            # query i sits at position offset + i and sees keys at positions <= offset + i
            mask = torch.arange(T, device=x.device)[None, :] <= positions[:, None]  # (L, T)
        ctx = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=self.softmax_scale)
        ctx = ctx.transpose(1, 2).reshape(batch, L, hq * hd)
        if self.mlp_dim > 0:
            ctx = torch.cat([ctx, x_mlp], dim=-1)
        return self.out_proj(ctx)

    def _conv(self, qkv: torch.Tensor, conv_state: torch.Tensor | None, offset: int) -> torch.Tensor:
        """Causal depthwise conv over the sequence (no activation); updates ``conv_state`` when given."""
        import ssm_kernels as sk

        xt = qkv.transpose(1, 2)  # (B, qkv_dim, L)
        w = self.conv1d.weight.squeeze(1)
        if conv_state is not None and offset > 0:
            out = torch.stack(
                [sk.causal_conv1d_update(xt[..., t], conv_state, w, self.conv1d.bias) for t in range(xt.shape[-1])],
                dim=-1,
            )
        else:
            if conv_state is not None:
                conv_state.copy_(F.pad(xt, (self.d_conv - xt.shape[-1], 0)).to(conv_state.dtype))
            out = sk.causal_conv1d_fn(xt, w, self.conv1d.bias)
        return out.transpose(1, 2)
