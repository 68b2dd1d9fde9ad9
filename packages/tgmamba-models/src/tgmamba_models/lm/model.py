"""Mamba language model: ``MixerModel`` (embedding, residual blocks, final norm) and ``MambaLMHeadModel``.

Parameter names follow the public ``state-spaces`` checkpoints (``backbone.embedding.weight``,
``backbone.layers.N.mixer.*``, ``backbone.layers.N.norm.weight``, ``backbone.norm_f.weight``,
``lm_head.weight``), so their ``pytorch_model.bin`` loads into :class:`MambaLMHeadModel` unchanged.
"""

from __future__ import annotations

import logging
import math
import os
from collections import namedtuple
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from ..mamba.block import Block, GatedMLP, add_norm
from ..mamba.mamba2 import Mamba2
from ..mamba.mamba_simple import Mamba
from . import hub
from .config import MambaConfig

__all__ = ["CausalLMOutput", "MambaLMHeadModel", "MixerModel", "create_block"]

logger = logging.getLogger(__name__)

CausalLMOutput = namedtuple("CausalLMOutput", ["logits"])


def create_block(
    d_model: int,
    d_intermediate: int,
    ssm_cfg: dict[str, Any] | None = None,
    attn_layer_idx: list[int] | None = None,
    attn_cfg: dict[str, Any] | None = None,
    norm_epsilon: float = 1e-5,
    rms_norm: bool = False,
    residual_in_fp32: bool = False,
    fused_add_norm: bool = False,
    layer_idx: int | None = None,
    device: Any = None,
    dtype: torch.dtype | None = None,
) -> Block:
    """One residual block: a Mamba-1 or Mamba-2 mixer (``ssm_cfg["layer"]``), or multi-head attention
    (:class:`~tgmamba_models.lm.attention.MHA` with ``attn_cfg``) when ``layer_idx`` is in ``attn_layer_idx``,
    then an optional gated MLP (``d_intermediate > 0``)."""
    fk = {"device": device, "dtype": dtype}
    ssm_cfg = dict(ssm_cfg or {})
    layer = ssm_cfg.pop("layer", "Mamba1")
    if layer not in ("Mamba1", "Mamba2"):
        raise ValueError(f"ssm_cfg['layer'] must be 'Mamba1' or 'Mamba2', got {layer!r}")
    if attn_layer_idx and layer_idx in attn_layer_idx:
        from .attention import MHA

        mixer_cls = partial(MHA, layer_idx=layer_idx, **(attn_cfg or {}), **fk)
    else:
        mixer_cls = partial(Mamba2 if layer == "Mamba2" else Mamba, layer_idx=layer_idx, **ssm_cfg, **fk)
    if rms_norm:
        import ssm_kernels as sk

        norm_cls = partial(sk.RMSNorm, eps=norm_epsilon, **fk)
    else:
        norm_cls = partial(nn.LayerNorm, eps=norm_epsilon, **fk)
    mlp_cls = None
    if d_intermediate > 0:
        mlp_cls = partial(GatedMLP, hidden_features=d_intermediate, out_features=d_model, **fk)
    block = Block(
        d_model, mixer_cls, mlp_cls, norm_cls=norm_cls, fused_add_norm=fused_add_norm, residual_in_fp32=residual_in_fp32
    )
    block.layer_idx = layer_idx
    return block


@torch.no_grad()
def _init_weights(
    module: nn.Module,
    n_layer: int,
    initializer_range: float = 0.02,
    rescale_prenorm_residual: bool = True,
    n_residuals_per_layer: int = 1,
) -> None:
    """GPT-2 style init: N(0, 0.02) embeddings, zero linear biases (except ``_no_reinit`` ones), and the
    output projections of each residual branch scaled by ``1 / sqrt(n_residuals_per_layer * n_layer)``."""
    if isinstance(module, nn.Linear):
        if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=initializer_range)
    if rescale_prenorm_residual:
        for name, p in module.named_parameters(recurse=False):
            if name == "weight" and getattr(module, "_is_residual_out", False):
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                p.div_(math.sqrt(n_residuals_per_layer * n_layer))


class MixerModel(nn.Module):
    """Token embedding, ``n_layer`` residual blocks and the final norm.

    Shapes:
        forward: input_ids (batch, L) int64 -> hidden_states (batch, L, d_model).
    """

    def __init__(
        self,
        d_model: int,
        n_layer: int,
        d_intermediate: int,
        vocab_size: int,
        ssm_cfg: dict[str, Any] | None = None,
        attn_layer_idx: list[int] | None = None,
        attn_cfg: dict[str, Any] | None = None,
        norm_epsilon: float = 1e-5,
        rms_norm: bool = False,
        initializer_cfg: dict[str, Any] | None = None,
        fused_add_norm: bool = False,
        residual_in_fp32: bool = False,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.residual_in_fp32 = residual_in_fp32
        self.fused_add_norm = fused_add_norm
        self.embedding = nn.Embedding(vocab_size, d_model, **fk)
        self.layers = nn.ModuleList(
            create_block(
                d_model,
                d_intermediate,
                ssm_cfg=ssm_cfg,
                attn_layer_idx=attn_layer_idx,
                attn_cfg=attn_cfg,
                norm_epsilon=norm_epsilon,
                rms_norm=rms_norm,
                residual_in_fp32=residual_in_fp32,
                fused_add_norm=fused_add_norm,
                layer_idx=i,
                **fk,
            )  # fmt: skip
            for i in range(n_layer)
        )
        if rms_norm:
            import ssm_kernels as sk

            self.norm_f = sk.RMSNorm(d_model, eps=norm_epsilon, **fk)
        else:
            self.norm_f = nn.LayerNorm(d_model, eps=norm_epsilon, **fk)
        for layer in self.layers:
            layer.mixer.out_proj._is_residual_out = True
            if layer.mlp is not None:
                layer.mlp.fc2._is_residual_out = True
        self.apply(
            partial(
                _init_weights,
                n_layer=n_layer,
                n_residuals_per_layer=1 if d_intermediate == 0 else 2,
                **(initializer_cfg or {}),
            )  # fmt: skip
        )

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> dict[int, Any]:
        return {
            i: layer.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, **kwargs)
            for i, layer in enumerate(self.layers)
        }

    def forward(self, input_ids: torch.Tensor, inference_params: Any = None, **mixer_kwargs: Any) -> torch.Tensor:
        hidden_states = self.embedding(input_ids)  # (B, L, d_model)
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(hidden_states, residual, inference_params=inference_params, **mixer_kwargs)
        hidden_states, _ = add_norm(
            self.norm_f, hidden_states, residual, self.residual_in_fp32, fused=self.fused_add_norm
        )
        return hidden_states


class MambaLMHeadModel(nn.Module):
    """Mamba language model: :class:`MixerModel` backbone and a linear LM head (tied to the embedding).

    Shapes:
        forward: input_ids (batch, L) int64 -> ``CausalLMOutput(logits=(batch, L', padded_vocab_size))``
        with ``L' = num_last_tokens`` if positive, else ``L``.
    """

    def __init__(
        self,
        config: MambaConfig,
        initializer_cfg: dict[str, Any] | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, MambaConfig):
            raise TypeError(f"config must be a MambaConfig, got {type(config).__name__}")
        self.config = config
        fk = {"device": device, "dtype": dtype}
        self.backbone = MixerModel(
            d_model=config.d_model,
            n_layer=config.n_layer,
            d_intermediate=config.d_intermediate,
            vocab_size=config.padded_vocab_size,
            ssm_cfg=config.ssm_cfg,
            attn_layer_idx=config.attn_layer_idx,
            attn_cfg=config.attn_cfg,
            norm_epsilon=config.norm_epsilon,
            rms_norm=config.rms_norm,
            initializer_cfg=initializer_cfg,
            fused_add_norm=config.fused_add_norm,
            residual_in_fp32=config.residual_in_fp32,
            **fk,
        )
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False, **fk)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> dict[int, Any]:
        """Per-layer decoding states ``{layer_idx: (conv_state, ssm_state)}``."""
        return self.backbone.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, **kwargs)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        inference_params: Any = None,
        num_last_tokens: int = 0,
        **mixer_kwargs: Any,
    ) -> CausalLMOutput:
        """``position_ids`` is accepted for API compatibility and ignored (Mamba has no positions)."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be an integer tensor of shape (batch, seqlen), got {shape}")
        hidden_states = self.backbone(input_ids, inference_params=inference_params, **mixer_kwargs)
        if num_last_tokens > 0:
            hidden_states = hidden_states[:, -num_last_tokens:]
        return CausalLMOutput(logits=self.lm_head(hidden_states.to(self.lm_head.weight.dtype)))

    # ------------------------------------------------------------------ generation
    def generate(self, input_ids: torch.Tensor, max_length: int | None = None, **kwargs: Any):
        """Generate continuations; see :func:`tgmamba_models.generate` for the options.

        ``max_length`` is the total length (prompt + new tokens), as in ``mamba_ssm``; ``enable_timing`` is
        accepted and ignored (the timings are always in the returned ``GenerationOutput``).
        Returns a :class:`~tgmamba_models.lm.generation.GenerationOutput`, or only its ``sequences``
        unless ``return_dict_in_generate=True``.
        """
        from .generation import generate

        return_dict = kwargs.pop("return_dict_in_generate", False)
        kwargs.pop("enable_timing", None)  # mamba_ssm's flag: timings are always in GenerationOutput.timings
        if max_length is not None:
            kwargs["max_length"] = max_length
        out = generate(self, input_ids, **kwargs)
        return out if return_dict else out.sequences

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = False) -> None:
        """Write ``config.json`` and the weights (``pytorch_model.bin``, or ``model.safetensors``).

        The pickle format keeps ``lm_head.weight`` even when tied (like the public checkpoints); the
        safetensors format stores a tied head once (as the embedding) and re-ties it on load.
        """
        os.makedirs(save_directory, exist_ok=True)
        self.config.to_json_file(os.path.join(save_directory, hub.CONFIG_NAME))
        state = self.state_dict()
        if safe_serialization and self.config.tie_embeddings:
            state.pop("lm_head.weight", None)
        hub.save_state_dict(state, save_directory, safe_serialization=safe_serialization)
        other = hub.WEIGHTS_NAME if safe_serialization else hub.SAFE_WEIGHTS_NAME
        stale = os.path.join(save_directory, other)
        if os.path.isfile(stale):  # the loader prefers safetensors: never leave an older file of the other format
            os.remove(stale)
            logger.info("removed stale %s from %s", other, os.fspath(save_directory))

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name: str | os.PathLike,
        device: Any = None,
        dtype: torch.dtype | None = None,
        strict: bool = True,
        **hub_kwargs: Any,
    ) -> MambaLMHeadModel:
        """Load from a local folder or a Hugging Face Hub id (``config.json`` + weights).

        Args:
            pretrained_model_name: folder path or Hub id (e.g. ``"state-spaces/mamba-130m"``).
            device, dtype: where and in which dtype to build the model.
            strict: require every parameter in the checkpoint (a tied ``lm_head.weight`` may be absent).
            hub_kwargs: ``revision``, ``cache_dir``, ``local_files_only`` for the Hub download.

        Raises:
            FileNotFoundError: a missing folder/file, or an unreachable Hub id, named in the message.
        """
        config = MambaConfig.from_dict(hub.load_config_dict(pretrained_model_name, **hub_kwargs))
        model = cls(config, device=device, dtype=dtype)
        state = hub.load_state_dict(pretrained_model_name, device="cpu", dtype=dtype, **hub_kwargs)
        if config.tie_embeddings:
            state.pop("lm_head.weight", None)
        own = model.state_dict()
        mismatched = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and v.shape != own[k].shape
        ]
        if mismatched:
            raise ValueError(
                f"checkpoint {os.fspath(pretrained_model_name)!r} does not match its config.json: shape mismatch "
                f"for {mismatched[:5]}{'...' if len(mismatched) > 5 else ''}"
            )
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not (config.tie_embeddings and k == "lm_head.weight")]
        if strict and (missing or unexpected):
            raise ValueError(
                f"checkpoint {os.fspath(pretrained_model_name)!r} does not match MambaLMHeadModel({config}): "
                f"missing keys {missing[:10]}{'...' if len(missing) > 10 else ''}, "
                f"unexpected keys {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}"
            )
        model.tie_weights()
        return model
