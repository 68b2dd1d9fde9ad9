"""End to end: tgmamba-train on tiny eye-state folds, tgmamba-eval on its checkpoint, no overwriting,
resume after an interruption, clear errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY, src_env

from tgmamba_train.cli import evaluate as eval_cli
from tgmamba_train.cli import train as train_cli


def _run(main, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    code = _run(train_cli.main, [*TINY, "--save_dir", str(root), "--run-name", "tiny", "--ensemble", "2"])
    assert code == 0
    return root


def test_train_writes_everything(tiny_run, capsys):
    run = tiny_run / "tiny"
    for name in ("config.json", "metrics.json", "roc_curve.png", "confusion_matrix.png", "training_curves.png"):
        assert (run / name).is_file(), name
    for k in (0, 1):
        assert (run / f"fold{k}" / "checkpoints" / "best.ckpt").is_file()
        assert (run / f"fold{k}" / "checkpoints" / "last.ckpt").is_file()
        assert (run / f"fold{k}" / "logs" / "metrics.csv").is_file()
    m = json.loads((run / "metrics.json").read_text())
    for model in ("tgmamba", "baseline"):
        for key in ("auroc", "accuracy", "f1"):
            assert len(m[model][key]["per_fold"]) == 2
            assert 0.0 <= m[model][key]["mean"] <= 1.0
    assert m["evaluation"].startswith("blocked 2-fold")
    cfg = json.loads((run / "config.json").read_text())["settings"]
    assert cfg["model_dim"] == 4 and cfg["cv_folds"] == 2


def test_never_overwrites(tiny_run, capsys):
    before = (tiny_run / "tiny" / "metrics.json").read_bytes()
    code = _run(
        train_cli.main, [*TINY, "--save_dir", str(tiny_run), "--run-name", "tiny", "--fold", "0", "--no-baseline"]
    )
    assert code == 0
    assert (tiny_run / "tiny-2" / "metrics.json").is_file()
    assert (tiny_run / "tiny" / "metrics.json").read_bytes() == before
    # resuming a finished run is refused
    code = _run(train_cli.main, ["--resume", str(tiny_run / "tiny")])
    assert code == 2
    assert "finished" in capsys.readouterr().err


def test_eval_checkpoint_and_mismatch(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "tiny" / "fold1" / "checkpoints" / "last.ckpt"  # member 0's evaluated checkpoint
    assert _run(eval_cli.main, [str(ckpt), "--split", "test"]) == 0
    out = tiny_run / "tiny" / "fold1" / "eval-test"
    res = json.loads((out / "metrics.json").read_text())
    fold = json.loads((tiny_run / "tiny" / "fold1" / "fold_metrics.json").read_text())
    # same checkpoint, same split: tgmamba-eval reproduces the training run's test metrics
    assert res["metrics"]["auroc"] == pytest.approx(fold["tgmamba_members"][0]["auroc"], abs=1e-9)
    assert (out / "roc_curve.png").is_file() and (out / "confusion_matrix.png").is_file()
    assert _run(eval_cli.main, [str(ckpt)]) == 0
    assert (tiny_run / "tiny" / "fold1" / "eval-test-2" / "metrics.json").is_file()  # not overwritten
    # a checkpoint whose model does not fit the data: clear error naming the mismatch
    from tgmamba_train.data.store import DatasetWriter

    w = DatasetWriter(
        tmp_path / "ds",
        name="other",
        task="binary",
        class_names=["a", "b"],
        channels=["Fz", "Cz", "Pz"],
        positions=["Fz", "Cz", "Pz"],
        sfreq=100.0,
        feature="x",
    )
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        w.add(split, rng.normal(size=(6, 3, 2, 5)), np.array([0, 1] * 3), "g")
    w.close()
    assert _run(eval_cli.main, [str(ckpt), "--data-dir", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "does not match the data" in err and "num_vertices: checkpoint 14, data 3" in err
    assert _run(eval_cli.main, [str(tmp_path / "nope.ckpt")]) == 2
    assert "nope.ckpt: checkpoint not found" in capsys.readouterr().err


def test_bad_cli_input(tmp_path, capsys):
    assert _run(train_cli.main, ["--dataset", "tusz", "--save_dir", str(tmp_path)]) == 2
    assert "--data-dir is required" in capsys.readouterr().err
    assert (
        _run(
            train_cli.main, ["--dataset", "tusz", "--data-dir", str(tmp_path / "nothing"), "--save_dir", str(tmp_path)]
        )
        == 2
    )
    assert "manifest.json: file not found" in capsys.readouterr().err


def test_resume_matches_uninterrupted(tmp_path, monkeypatch):
    """Train 2 epochs straight vs. 1 epoch, 'crash', resume: same final weights."""
    from tgmamba_train import experiment

    args = [*TINY, "--fold", "0", "--num_epochs", "2", "--no-baseline", "--save_dir", str(tmp_path)]
    assert _run(train_cli.main, [*args, "--run-name", "straight"]) == 0

    real_trainer = experiment.L.Trainer

    class CrashAfterOneEpoch:
        def __init__(self, **kw):
            kw["max_epochs"] = 1
            self.t = real_trainer(**kw)

        def fit(self, *a, **k):
            self.t.fit(*a, **k)
            raise KeyboardInterrupt

    monkeypatch.setattr(experiment.L, "Trainer", CrashAfterOneEpoch)
    assert _run(train_cli.main, [*args, "--run-name", "crashed"]) == 130
    monkeypatch.setattr(experiment.L, "Trainer", real_trainer)
    crashed = tmp_path / "crashed"
    assert (crashed / "fold0" / "checkpoints" / "last.ckpt").is_file() and not (crashed / "metrics.json").exists()
    assert _run(train_cli.main, ["--resume", str(crashed), "--no-progress"]) == 0
    a = torch.load(tmp_path / "straight" / "fold0" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(crashed / "fold0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 1
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=1e-6, msg=k)
    ma = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    mb = json.loads((crashed / "metrics.json").read_text())
    assert mb["tgmamba"]["auroc"]["mean"] == pytest.approx(ma["tgmamba"]["auroc"]["mean"], abs=1e-6)
    hist = json.loads((crashed / "fold0" / "fold_metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [0, 1]  # history survives the interruption


def test_module_entry_point_help():
    env = src_env()
    out = subprocess.run([sys.executable, "-m", "tgmamba_train"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "train,eval,preprocess" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "tgmamba_train", "train", "--help"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0
    for flag in (
        "--conv_type",
        "--state_expansion_factor",
        "--edge_learner_time_varying",
        "--cv-folds",
        "--resume",
        "--strategy",
        "--precision",
        "--logger",
        "--load_model",
        "--accumulate_grad_batches",
    ):
        assert flag in out.stdout, flag


def test_ensemble_members_written(tiny_run):
    fold = tiny_run / "tiny" / "fold0"
    assert (fold / "member1" / "checkpoints" / "last.ckpt").is_file()
    res = json.loads((fold / "fold_metrics.json").read_text())
    assert res["ensemble"] == 2 and len(res["tgmamba_members"]) == 2
    p = np.load(fold / "predictions.npz")
    m0 = np.load(fold / "member_predictions.npz")["probs"]
    m1 = np.load(fold / "member1" / "member_predictions.npz")["probs"]
    np.testing.assert_allclose(p["tgmamba"], (m0 + m1) / 2)
    assert not np.allclose(m0, m1)  # different seeds


def test_load_model_initialises_and_checks_shapes(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "tiny" / "fold0" / "checkpoints" / "last.ckpt"
    args = [*TINY, "--fold", "0", "--no-baseline", "--save_dir", str(tmp_path), "--load_model", str(ckpt)]
    assert _run(train_cli.main, [*args, "--run-name", "ft", "--num_epochs", "1", "--lr_init", "1e-9"]) == 0
    a = torch.load(ckpt, weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "ft" / "fold0" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    key = next(k for k in a if k.startswith("model.") and a[k].ndim == 2)
    torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0)  # started from the loaded weights
    assert _run(train_cli.main, [*args, "--run-name", "bad", "--model_dim", "6"]) == 2
    assert "parameter shapes differ" in capsys.readouterr().err


def test_relative_save_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run(train_cli.main, [*TINY, "--fold", "0", "--no-baseline", "--save_dir", "rel", "--run-name", "r"]) == 0
    m = json.loads((tmp_path / "rel" / "r" / "metrics.json").read_text())
    assert m["per_fold"][0]["last_checkpoint"] == "fold0/checkpoints/last.ckpt"
