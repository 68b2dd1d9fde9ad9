"""``MambaConfig``: the configuration of a Mamba language model, as stored in a checkpoint's ``config.json``.

The field names are those of the public ``state-spaces/mamba-*`` / ``mamba2-*`` checkpoints, so their
``config.json`` files load unchanged.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["MambaConfig"]

_LAYERS = ("Mamba1", "Mamba2")


@dataclass
class MambaConfig:
    """Configuration of :class:`~tgmamba_models.MambaLMHeadModel`.

    Attributes:
        d_model: model width.
        d_intermediate: hidden width of the gated MLP after each mixer (0: no MLP).
        n_layer: number of residual blocks.
        vocab_size: tokenizer vocabulary size (the embedding is padded, see ``padded_vocab_size``).
        ssm_cfg: keyword arguments of the mixer; ``"layer"`` selects ``"Mamba1"`` (default) or ``"Mamba2"``.
        attn_layer_idx: indices of the layers that use multi-head attention instead of the SSM mixer.
        attn_cfg: keyword arguments of those attention layers (``num_heads``, ``num_heads_kv``, ``head_dim``,
            ``rotary_emb_dim``, ``d_conv``, ``mlp_dim``, ...; see :class:`tgmamba_models.lm.attention.MHA`).
        rms_norm: RMSNorm (``True``) or LayerNorm.
        residual_in_fp32: keep the residual stream in float32.
        fused_add_norm: fused residual-add + norm kernels.
        pad_vocab_size_multiple: the embedding rows are rounded up to a multiple of this.
        tie_embeddings: share the embedding and the LM head weights.
        norm_epsilon: epsilon of the norms.
    """

    d_model: int = 2560
    d_intermediate: int = 0
    n_layer: int = 64
    vocab_size: int = 50277
    ssm_cfg: dict[str, Any] = field(default_factory=dict)
    attn_layer_idx: list[int] = field(default_factory=list)
    attn_cfg: dict[str, Any] = field(default_factory=dict)
    rms_norm: bool = True
    residual_in_fp32: bool = True
    fused_add_norm: bool = True
    pad_vocab_size_multiple: int = 8
    tie_embeddings: bool = True
    norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple"):
            val = getattr(self, name)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"MambaConfig.{name} must be a positive integer, got {val!r}")
        if not isinstance(self.d_intermediate, int) or self.d_intermediate < 0:
            raise ValueError(f"MambaConfig.d_intermediate must be a non-negative integer, got {self.d_intermediate!r}")
        self.ssm_cfg = dict(self.ssm_cfg or {})
        self.attn_cfg = dict(self.attn_cfg or {})
        self.attn_layer_idx = list(self.attn_layer_idx or [])
        layer = self.ssm_cfg.get("layer", "Mamba1")
        if layer not in _LAYERS:
            raise ValueError(f"MambaConfig.ssm_cfg['layer'] must be one of {_LAYERS}, got {layer!r}")
        bad = [i for i in self.attn_layer_idx if not (isinstance(i, int) and 0 <= i < self.n_layer)]
        if bad:
            raise ValueError(
                f"MambaConfig.attn_layer_idx entries must be layer indices in [0, {self.n_layer}), got {bad}"
            )

    @property
    def layer(self) -> str:
        """The mixer type, ``"Mamba1"`` or ``"Mamba2"``."""
        return self.ssm_cfg.get("layer", "Mamba1")

    @property
    def padded_vocab_size(self) -> int:
        """``vocab_size`` rounded up to a multiple of ``pad_vocab_size_multiple`` (the embedding's rows)."""
        m = self.pad_vocab_size_multiple
        return (self.vocab_size + m - 1) // m * m

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MambaConfig:
        """Build from a dict (e.g. a checkpoint's ``config.json``); unknown keys are ignored with a warning."""
        if not isinstance(d, dict):
            raise TypeError(f"config must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            warnings.warn(f"MambaConfig: ignoring unknown config keys {unknown}", stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> MambaConfig:
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {os.fspath(path)!r} is not valid JSON: {e}") from e
        return cls.from_dict(d)
