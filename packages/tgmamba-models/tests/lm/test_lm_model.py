"""MambaConfig and MambaLMHeadModel: config I/O, public key layout, save/load round trips, loading errors."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest
import torch

from ssm_kernels.testing import seed_all
from tgmamba_models import MambaConfig, MambaLMHeadModel
from tgmamba_models.lm import hub
from tgmamba_models.lm.generation import InferenceParams


def tiny_config(layer: str = "Mamba1", **kw) -> MambaConfig:
    ssm_cfg = {"layer": layer, "d_state": 8}
    if layer == "Mamba2":
        ssm_cfg.update(headdim=8, chunk_size=4)
    base = dict(d_model=16, n_layer=2, vocab_size=50, ssm_cfg=ssm_cfg, pad_vocab_size_multiple=8)
    base.update(kw)
    return MambaConfig(**base)


# the config.json of state-spaces/mamba-130m and mamba2-130m, dimensions shrunk
PUBLIC_MAMBA1 = {"d_model": 16, "n_layer": 2, "vocab_size": 50, "ssm_cfg": {}, "rms_norm": True,
                 "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}  # fmt: skip
PUBLIC_MAMBA2 = {"d_model": 16, "d_intermediate": 0, "n_layer": 2, "vocab_size": 50,
                 "ssm_cfg": {"layer": "Mamba2", "headdim": 8, "d_state": 8}, "attn_layer_idx": [], "attn_cfg": {},
                 "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 16,
                 "tie_embeddings": True}  # fmt: skip


def test_config_defaults_and_padding():
    c = MambaConfig(d_model=768, n_layer=24, vocab_size=50277)
    assert c.padded_vocab_size == 50280 and c.layer == "Mamba1"
    assert MambaConfig.from_dict(c.to_dict()) == c
    with pytest.warns(UserWarning, match="unknown"):
        MambaConfig.from_dict({**PUBLIC_MAMBA1, "bogus": 1})
    with pytest.raises(ValueError, match="layer"):
        MambaConfig(ssm_cfg={"layer": "Mamba3"})
    with pytest.raises(ValueError, match="d_model"):
        MambaConfig(d_model=0)


def test_config_json_round_trip(tmp_path):
    c = tiny_config("Mamba2", d_intermediate=24)
    c.to_json_file(tmp_path / "config.json")
    assert MambaConfig.from_json_file(tmp_path / "config.json") == c
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        MambaConfig.from_json_file(tmp_path / "bad.json")


@pytest.mark.parametrize("public", [PUBLIC_MAMBA1, PUBLIC_MAMBA2], ids=["mamba1", "mamba2"])
def test_state_dict_keys_follow_public_layout(public):
    m = MambaLMHeadModel(MambaConfig.from_dict(public))
    keys = set(m.state_dict())
    assert {"backbone.embedding.weight", "backbone.norm_f.weight", "lm_head.weight",
            "backbone.layers.0.norm.weight", "backbone.layers.1.mixer.in_proj.weight"} <= keys  # fmt: skip
    if public is PUBLIC_MAMBA1:
        assert "backbone.layers.0.mixer.dt_proj.bias" in keys and "backbone.layers.0.mixer.x_proj.weight" in keys
    else:
        assert "backbone.layers.0.mixer.dt_bias" in keys and "backbone.layers.0.mixer.norm.weight" in keys
    assert m.lm_head.weight is m.backbone.embedding.weight
    assert m.backbone.embedding.weight.shape[0] % public["pad_vocab_size_multiple"] == 0


@pytest.mark.parametrize("layer", ["Mamba1", "Mamba2"])
@pytest.mark.parametrize("safe", [False, True], ids=["bin", "safetensors"])
def test_save_load_round_trip(tmp_path, layer, safe):
    seed_all(0)
    m = MambaLMHeadModel(tiny_config(layer, d_intermediate=20 if layer == "Mamba2" else 0))
    m.save_pretrained(tmp_path, safe_serialization=safe)
    files = set(os.listdir(tmp_path))
    assert files == {"config.json", "model.safetensors" if safe else "pytorch_model.bin"}
    if not safe:  # the public layout keeps the (tied) head
        assert "lm_head.weight" in torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    m2 = MambaLMHeadModel.from_pretrained(str(tmp_path))
    assert m2.config == m.config
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(v, v2, rtol=0, atol=0)
    assert m2.lm_head.weight is m2.backbone.embedding.weight
    ids = torch.randint(0, 50, (2, 5))
    torch.testing.assert_close(m(ids).logits, m2(ids).logits)


def test_untied_head_and_dtype(tmp_path):
    m = MambaLMHeadModel(tiny_config(tie_embeddings=False))
    assert m.lm_head.weight is not m.backbone.embedding.weight
    m.save_pretrained(tmp_path, safe_serialization=True)
    m2 = MambaLMHeadModel.from_pretrained(tmp_path, dtype=torch.float64)
    assert m2.lm_head.weight.dtype == torch.float64
    torch.testing.assert_close(m2.lm_head.weight.float(), m.lm_head.weight)


def test_save_removes_stale_other_format(tmp_path):
    m = MambaLMHeadModel(tiny_config())
    m.save_pretrained(tmp_path, safe_serialization=True)
    m.save_pretrained(tmp_path, safe_serialization=False)
    assert not (tmp_path / "model.safetensors").exists() and (tmp_path / "pytorch_model.bin").exists()


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MambaLMHeadModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(PUBLIC_MAMBA1))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*pytorch_model\.bin"):
        MambaLMHeadModel.from_pretrained(tmp_path)
    torch.save({"backbone.embedding.weight": torch.zeros(3, 3)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"shape mismatch.*backbone\.embedding\.weight"):
        MambaLMHeadModel.from_pretrained(tmp_path)
    torch.save({"backbone.embedding.weight": torch.zeros(56, 16)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="missing keys"):
        MambaLMHeadModel.from_pretrained(tmp_path)
    assert MambaLMHeadModel.from_pretrained(tmp_path, strict=False).backbone.embedding.weight.abs().sum() == 0


def test_pickle_weights_are_loaded_safely(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(PUBLIC_MAMBA1))
    torch.save({"x": types.SimpleNamespace(a=1)}, tmp_path / "pytorch_model.bin")  # arbitrary object: refused
    with pytest.raises(ValueError, match="could not read weights"):
        MambaLMHeadModel.from_pretrained(tmp_path)


def test_hub_id_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(FileNotFoundError, match=r"state-spaces/mamba-130m.*huggingface_hub is not installed"):
        MambaLMHeadModel.from_pretrained("state-spaces/mamba-130m")


def _fake_hub(folder=None):
    calls = []

    def hf_hub_download(repo_id, filename, revision=None, cache_dir=None, local_files_only=False):
        calls.append((repo_id, filename, local_files_only))
        if folder is None:
            raise OSError("offline: cannot reach huggingface.co and the file is not in the cache")
        path = os.path.join(folder, filename)
        if not os.path.exists(path):
            raise OSError(f"404: {filename} not in {repo_id}")
        return path

    return types.SimpleNamespace(hf_hub_download=hf_hub_download), calls


def test_hub_id_offline_error_names_id_and_file(monkeypatch):
    fake, calls = _fake_hub(None)
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    with pytest.raises(FileNotFoundError, match=r"config\.json.*org/tiny-mamba.*offline"):
        MambaLMHeadModel.from_pretrained("org/tiny-mamba", local_files_only=True)
    assert calls == [("org/tiny-mamba", "config.json", True)]


def test_hub_id_download(monkeypatch, tmp_path):
    seed_all(1)
    m = MambaLMHeadModel(tiny_config())
    m.save_pretrained(tmp_path)  # pytorch_model.bin only: the safetensors lookup 404s first
    fake, calls = _fake_hub(str(tmp_path))
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    m2 = MambaLMHeadModel.from_pretrained("org/tiny-mamba", revision="main")
    assert [c[1] for c in calls] == ["config.json", "model.safetensors", "pytorch_model.bin"]
    torch.testing.assert_close(m2.backbone.embedding.weight, m.backbone.embedding.weight)


def test_resolve_file_rejects_plain_file(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        hub.resolve_file(f, "config.json")


@pytest.mark.parametrize("layer", ["Mamba1", "Mamba2"])
def test_cached_forward_matches_full_forward(layer):
    seed_all(2)
    m = MambaLMHeadModel(tiny_config(layer)).eval()
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        full = m(ids).logits
        params = InferenceParams(max_seqlen=9, max_batch_size=2)
        first = m(ids[:, :5], inference_params=params).logits
        params.seqlen_offset = 5
        rest = []
        for t in range(5, 9):
            rest.append(m(ids[:, t : t + 1], inference_params=params).logits)
            params.seqlen_offset += 1
    torch.testing.assert_close(torch.cat([first, *rest], 1), full, atol=1e-4, rtol=1e-4)
    last = m(ids, num_last_tokens=2).logits
    torch.testing.assert_close(last, full[:, -2:])


def test_bad_input_ids():
    m = MambaLMHeadModel(tiny_config())
    with pytest.raises(ValueError, match="input_ids"):
        m(torch.randn(2, 3))
    with pytest.raises(ValueError, match="attn_layer_idx"):
        tiny_config(attn_layer_idx=[5])
