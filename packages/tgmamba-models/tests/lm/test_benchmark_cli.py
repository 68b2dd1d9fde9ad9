"""The generation benchmark CLI on tiny CPU models: random init from a JSON config and a local folder."""

from __future__ import annotations

import json
import sys

import pytest

from tgmamba_models import MambaConfig, MambaLMHeadModel
from tgmamba_models.lm.benchmark import ByteTokenizer, build_parser, main

TINY = {"d_model": 16, "n_layer": 2, "vocab_size": 300, "ssm_cfg": {"d_state": 4}}
FAST = ["--device", "cpu", "--promptlen", "5", "--genlen", "4", "--repeats", "1", "--warmup", "0", "--json"]


def _result(capsys):
    out = capsys.readouterr().out
    assert "Prompt processing:" in out and "Decoding:" in out and "tokens/s" in out
    return json.loads(out.strip().splitlines()[-1])


def test_original_readme_flags_parse():
    args = build_parser().parse_args(
        [
            "--model-name",
            "state-spaces/mamba-2.8b",
            "--prompt",
            "My cat",
            "--topp",
            "0.9",
            "--temperature",
            "0.7",
            "--repetition-penalty",
            "1.2",
            "--minp",
            "0.05",
            "--topk",
            "0",
            "--batch",
            "64",
            "--promptlen",
            "7",
            "--genlen",
            "9",
        ]  # fmt: skip
    )
    assert (args.topp, args.temperature, args.repetition_penalty, args.minp, args.topk, args.batch) == (
        0.9, 0.7, 1.2, 0.05, 0, 64,
    )  # fmt: skip


def test_random_init_config_file(tmp_path, capsys):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    assert main(["--random-init-config", str(cfg), "--batch", "2", "--topk", "0", "--topp", "0.9", *FAST]) == 0
    r = _result(capsys)
    assert r["kind"] == "mamba" and r["batch"] == 2 and r["promptlen"] == 5 and r["genlen"] == 4
    assert r["decode_tokens_per_s"] > 0 and r["prefill_ms"] > 0 and r["cg"] is False


def test_local_folder_with_prompt(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # force the byte-level tokenizer
    MambaLMHeadModel(MambaConfig(**TINY)).save_pretrained(tmp_path / "model")
    assert (
        main(["--model-name", str(tmp_path / "model"), "--prompt", "héllo", "--minp", "0.05", "--topk", "0", *FAST])
        == 0
    )
    r = _result(capsys)
    assert r["promptlen"] == len("héllo".encode()) and r["completion"].startswith("héllo")


def test_hub_id_without_hub_client_fails_clearly(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(FileNotFoundError, match="state-spaces/mamba-130m"):
        main(["--model-name", "state-spaces/mamba-130m", *FAST])


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("My cat wrote ✓")) == "My cat wrote ✓"
    assert tok.decode([72, 1000, 105]) == "Hi"
