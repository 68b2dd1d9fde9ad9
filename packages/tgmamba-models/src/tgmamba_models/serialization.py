"""Save and load modules as a directory holding ``config.json`` and ``model.safetensors``.

Generic over any ``@dataclass`` config: :func:`save_module` writes the dataclass's init fields
(plus the class name under ``"_config_class"``) and the state dict; :func:`load_config` and
:func:`load_state_dict` read them back. Keys starting with ``_`` in the JSON are metadata.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "load_config", "load_state_dict", "save_module"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

T = TypeVar("T")


def _config_dict(config: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    out = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    try:
        json.dumps(out)
    except TypeError as e:
        raise TypeError(f"config {type(config).__name__} has fields that are not JSON-serialisable: {e}") from e
    return out


def save_module(
    directory: str | os.PathLike, config: Any, state_dict: dict[str, torch.Tensor], **metadata: Any
) -> Path:
    """Write ``config.json`` (dataclass init fields) and ``model.safetensors`` into ``directory``.

    Tensors are saved contiguous, on CPU, each with its own storage (tied weights are stored
    twice and re-tied by ``load_state_dict`` on the module). Extra ``metadata`` keys are stored
    in the JSON with a leading underscore. Returns the directory path.
    """
    from safetensors.torch import save_file

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    data = {"_config_class": type(config).__name__, **{f"_{k}": v for k, v in metadata.items()}}
    data.update(_config_dict(config))
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    (path / CONFIG_NAME).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def load_config(directory: str | os.PathLike, config_cls: type[T]) -> T:
    """Read ``config.json`` from ``directory`` into ``config_cls``; unknown fields raise an error naming them."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory!s}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    saved_cls = data.get("_config_class")
    if saved_cls is not None and saved_cls != config_cls.__name__:
        raise ValueError(f"{path} holds a {saved_cls}, not a {config_cls.__name__}")
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    kwargs = {k: v for k, v in data.items() if not k.startswith("_")}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"{path} has fields unknown to {config_cls.__name__}: {unknown}")
    return config_cls(**kwargs)


def load_state_dict(directory: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` from ``directory`` onto ``device``."""
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory!s}")
    return load_file(str(path), device=str(device))
