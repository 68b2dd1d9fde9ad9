"""Checkpoint helpers: load weights for --load_model, open a checkpoint for evaluation, check that a
checkpoint's model fits the data."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ConfigMismatchError, DataError

__all__ = ["check_compatible", "load_checkpoint_module", "load_weights_into"]


def _read(path: Path) -> dict:
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise DataError(path, f"corrupt or unreadable checkpoint ({type(exc).__name__}: {exc})") from exc


def load_weights_into(module: torch.nn.Module, path: str | Path) -> None:
    """Initialise ``module`` (a TGMambaLightning) from a Lightning .ckpt or a ``save_pretrained`` folder.

    Raises ConfigMismatchError naming the mismatched parameters when shapes differ.
    """
    path = Path(path)
    if path.is_dir():
        from safetensors.torch import load_file

        f = path / "model.safetensors"
        if not f.is_file():
            raise DataError(f, "file not found (expected a save_pretrained folder)")
        state = {f"model.{k}": v for k, v in load_file(str(f)).items()}
    else:
        state = _read(path).get("state_dict")
        if state is None:
            raise DataError(path, "no 'state_dict' in this file: not a Lightning checkpoint")
    own = module.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ConfigMismatchError(
            f"{path}: parameter shapes differ from the model being trained: "
            + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:5])
        )
    model_state = {k: v for k, v in state.items() if k.startswith("model.")}
    missing, unexpected = module.load_state_dict(model_state, strict=False)
    missing = [k for k in missing if k.startswith("model.")]
    if missing:
        raise ConfigMismatchError(f"{path}: checkpoint lacks model parameters {missing[:5]}")


def check_compatible(model_config: dict, num_vertices: int, in_features: int, num_classes: int, where: str) -> None:
    """Raise ConfigMismatchError if the checkpoint's model cannot take this data."""
    problems = []
    for key, want in (("num_vertices", num_vertices), ("in_features", in_features), ("num_classes", num_classes)):
        if int(model_config[key]) != int(want):
            problems.append(f"{key}: checkpoint {model_config[key]}, data {want}")
    if problems:
        raise ConfigMismatchError(f"{where}: checkpoint model does not match the data ({'; '.join(problems)})")


def load_checkpoint_module(path: str | Path):
    """Rebuild the TGMambaLightning module stored in a .ckpt (hyper-parameters + weights)."""
    from .module import TGMambaLightning

    path = Path(path)
    ck = _read(path)
    hp = ck.get("hyper_parameters")
    if not hp or "model_config" not in hp:
        raise DataError(path, "checkpoint lacks TGMamba hyper-parameters (not written by tgmamba-train?)")
    module = TGMambaLightning(**hp)
    module.load_state_dict(ck["state_dict"])
    return module.eval(), hp
