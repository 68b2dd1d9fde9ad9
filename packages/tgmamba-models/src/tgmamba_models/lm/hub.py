"""Checkpoint files from a local folder or a Hugging Face Hub id (``huggingface_hub`` is optional).

Layout (that of the public ``state-spaces/*`` checkpoints): ``config.json`` plus weights in
``pytorch_model.bin`` (a pickled state dict, loaded with ``weights_only=True``) or ``model.safetensors``
(preferred when both exist).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

__all__ = [
    "CONFIG_NAME",
    "SAFE_WEIGHTS_NAME",
    "WEIGHTS_NAME",
    "load_config_dict",
    "load_state_dict",
    "resolve_file",
    "save_state_dict",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"
SAFE_WEIGHTS_NAME = "model.safetensors"


def _hub_download(name: str, filename: str, revision: str | None, cache_dir: str | None, local_files_only: bool) -> str:
    try:
        import huggingface_hub
    except ImportError as e:
        raise FileNotFoundError(
            f"{name!r} is not a local folder, and huggingface_hub is not installed to fetch {filename!r} from the "
            f"Hugging Face Hub (pip install 'tgmamba-models[hub]', or pass a folder containing {CONFIG_NAME} and "
            f"{WEIGHTS_NAME} or {SAFE_WEIGHTS_NAME})"
        ) from e
    try:
        return huggingface_hub.hf_hub_download(
            repo_id=name, filename=filename, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
    except Exception as e:  # offline, unknown repo, missing file, network: all end here
        raise FileNotFoundError(
            f"could not get {filename!r} of {name!r} from the Hugging Face Hub or its local cache "
            f"({type(e).__name__}: {e}). If you are offline, download it beforehand or pass a local folder "
            f"containing {CONFIG_NAME} and {WEIGHTS_NAME} or {SAFE_WEIGHTS_NAME}."
        ) from e


def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
) -> str:
    """Path of ``filename`` in a local folder, or downloaded (or taken from the cache) for a Hub id.

    Raises:
        FileNotFoundError: naming the folder or id and the missing file.
    """
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        path = os.path.join(name, filename)
        if not os.path.isfile(path):
            present = sorted(os.listdir(name))
            raise FileNotFoundError(f"model folder {name!r} has no {filename!r} (it contains: {present})")
        return path
    if os.path.exists(name):
        raise FileNotFoundError(f"{name!r} is a file, not a model folder (expected a folder with {CONFIG_NAME})")
    return _hub_download(name, filename, revision, cache_dir, local_files_only)


def load_config_dict(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> dict[str, Any]:
    """The parsed ``config.json`` of a folder or Hub id."""
    path = resolve_file(name_or_path, CONFIG_NAME, **hub_kwargs)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{CONFIG_NAME} of {os.fspath(name_or_path)!r} is not valid JSON: {e}") from e


def load_state_dict(
    name_or_path: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    **hub_kwargs: Any,
) -> dict[str, torch.Tensor]:
    """The weights of a folder or Hub id: ``model.safetensors`` if present, else ``pytorch_model.bin``.

    ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)`` (no arbitrary code).
    Floating tensors are cast to ``dtype`` when given.
    """
    name = os.fspath(name_or_path)
    errors = []
    path = None
    for filename in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME):
        try:
            path = resolve_file(name, filename, **hub_kwargs)
            break
        except FileNotFoundError as e:
            errors.append(str(e))
    if path is None:
        raise FileNotFoundError(
            f"no weights for {name!r}: neither {SAFE_WEIGHTS_NAME} nor {WEIGHTS_NAME} was found.\n  "
            + "\n  ".join(errors)
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path, device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"could not read weights file {path!r} (of {name!r}): {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path!r} does not hold a flat state dict of tensors")
    out = {}
    for k, v in state.items():
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.to(device)
    return out


def save_state_dict(state: dict[str, torch.Tensor], folder: str | os.PathLike, safe_serialization: bool) -> str:
    """Write ``state`` to ``folder/pytorch_model.bin`` or ``folder/model.safetensors``; return the path.

    Shared tensors (tied embeddings) are written once in safetensors, so the caller should drop the
    tied copy (the loader re-ties it).
    """
    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if safe_serialization:
        from safetensors.torch import save_file

        path = os.path.join(folder, SAFE_WEIGHTS_NAME)
        save_file(state, path, metadata={"format": "pt"})
    else:
        path = os.path.join(folder, WEIGHTS_NAME)
        torch.save(state, path)
    return path
