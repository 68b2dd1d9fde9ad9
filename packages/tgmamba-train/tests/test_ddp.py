"""2-process DDP on CPU (gloo) through the real CLI in a subprocess (Lightning re-launches the command)."""

import json
import subprocess
import sys

import pytest
from conftest import TINY, src_env


@pytest.mark.ddp
def test_ddp_two_processes_cpu(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "tgmamba_train",
        "train",
        *TINY,
        "--fold",
        "1",
        "--num_epochs",
        "2",
        "--strategy",
        "ddp",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--save_dir",
        str(tmp_path),
        "--run-name",
        "ddp",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=src_env(), timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert runs == ["ddp"], runs  # the second rank joined rank 0's run folder instead of making its own
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    hist = json.loads((tmp_path / "ddp" / "fold1" / "fold_metrics.json").read_text())["history"]
    assert len(hist) == 2 and m["folds"] == [1]
    assert "TGMamba" in out.stdout
