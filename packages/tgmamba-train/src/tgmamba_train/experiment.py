"""Training and evaluation runs: one fold (fit, checkpoints, test evaluation, baseline) and blocked K-fold
cross-validation with an aggregated report. Used by the CLIs; returns results, never prints."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint

from . import __version__
from .baseline import fit_bandpower_baseline
from .checkpoint import load_weights_into
from .data.container import PreparedData
from .data.datamodule import ArrayDataset, EEGDataModule
from .errors import DataError
from .metrics import HEADLINE, compute_metrics, summarize_folds
from .module import TGMambaLightning
from .reports import plot_confusion, plot_roc, plot_training_curves
from .runs import default_run_name, is_finished, new_run_dir, read_json, write_json
from .settings import RUNTIME_FIELDS, TrainSettings

__all__ = ["HistoryCallback", "load_data", "predict", "run_training", "train_fold"]

log = logging.getLogger(__name__)
RUN_DIR_ENV = "TGMAMBA_TRAIN_RUN_DIR"


class HistoryCallback(Callback):
    """Per-epoch train/val metrics; its state is saved in checkpoints so a resumed run keeps its history."""

    def __init__(self):
        self.history: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train_", "val_"))}
        self.history.append({"epoch": int(trainer.current_epoch), **m})

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state_dict):
        self.history = list(state_dict.get("history", []))


def _is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def load_data(settings: TrainSettings, fold: int) -> tuple[PreparedData, dict | None]:
    """The data of one fold: (prepared data, normalisation for the data module or None)."""
    if settings.dataset == "eye-state":
        from .data.eye_state import EyeStateConfig, load_recording, prepare_eye_state

        path = settings.data_dir
        if path is not None and Path(path).is_dir():
            cands = sorted(Path(path).glob("*.arff")) + sorted(Path(path).glob("*.npz"))
            if not cands:
                raise DataError(path, "no .arff or .npz EEG Eye State file in this folder")
            path = cands[0]
        rec = load_recording(path)
        cfg = EyeStateConfig(
            window=settings.window,
            stride=settings.stride,
            label_policy=settings.label_policy,
            features=settings.features,
            gap=settings.gap,
            val_fraction=settings.val_fraction,
            graph_top_k=settings.graph_top_k,
            electrode_features=settings.electrode_features,
        )
        return prepare_eye_state(rec, fold, settings.cv_folds, cfg), None
    if settings.data_dir is None:
        raise ValueError(f"--data-dir is required for dataset {settings.dataset!r} (a tgmamba-preprocess output)")
    from .data.store import load_dataset

    data, meta = load_dataset(settings.data_dir, graph_top_k=settings.graph_top_k)
    if settings.dataset != "disk" and meta["name"] != settings.dataset:
        raise DataError(
            Path(settings.data_dir) / "manifest.json",
            f"holds dataset {meta['name']!r}, but --dataset is {settings.dataset!r}",
        )
    return data, meta["normalization"]


def data_meta(data: PreparedData, settings: TrainSettings, fold: int, normalization: dict | None) -> dict:
    """What a checkpoint needs to rebuild and check its data."""
    V, Lq, F = data.sample_shape
    return {
        "dataset": data.name,
        "task": data.task,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "channels": data.channels,
        "sample_shape": [V, Lq, F],
        "fold": fold,
        "settings": settings.to_dict(),
        "normalization": normalization,
        "eye_state": {k: data.info[k] for k in ("scaler", "feature_standardizer", "regions") if k in data.info},
    }


@torch.no_grad()
def predict(
    module: torch.nn.Module, dataset: ArrayDataset, batch_size: int, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Class probabilities of every sample. Shapes: returns (N, num_classes) float64."""
    module = module.to(device).eval()
    out = []
    for i in range(0, len(dataset), batch_size):
        xs = torch.stack([dataset[j][0] for j in range(i, min(i + batch_size, len(dataset)))]).to(device)
        out.append(module(xs).float().softmax(-1).cpu().numpy().astype(np.float64))
    return np.concatenate(out) if out else np.empty((0, 0))


def _make_logger(settings: TrainSettings, out_dir: Path):
    from lightning.pytorch.loggers import CSVLogger

    if settings.logger == "none":
        return False
    if settings.logger == "csv":
        return CSVLogger(str(out_dir), name="logs", version="")
    if settings.logger == "tensorboard":
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            return TensorBoardLogger(str(out_dir), name="tb", version="")
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError("--logger tensorboard needs: pip install 'tgmamba-train[tensorboard]'") from exc
    try:
        import wandb  # noqa: F401
        from lightning.pytorch.loggers import WandbLogger
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("--logger wandb needs: pip install 'tgmamba-train[wandb]'") from exc
    return WandbLogger(project="tgmamba", name=out_dir.name, save_dir=str(out_dir))


def _devices(spec: str):
    if spec == "auto":
        return "auto"
    if "," in spec:
        return [int(s) for s in spec.split(",") if s]
    return int(spec)


def _fit_member(
    data: PreparedData, settings: TrainSettings, mdir: Path, fold: int, seed: int, normalization, class_weights
) -> dict | None:
    """Fit one ensemble member in ``mdir`` (resuming from its last.ckpt) and, on rank 0, predict the test split.

    A finished member leaves ``member_predictions.npz``; it is not trained again.
    """
    mdir.mkdir(parents=True, exist_ok=True)
    done = mdir / "member_predictions.npz"
    if done.is_file():
        with np.load(done, allow_pickle=False) as z:
            return {"probs": z["probs"], "cached": True}
    ckpt_dir = mdir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if last.is_file() else None
    L.seed_everything(seed, workers=True, verbose=False)
    V, Lq, F = data.sample_shape
    module = TGMambaLightning(
        model_config=settings.model_config(V, F, data.num_classes),
        task=data.task,
        graph={"edge_index": data.edge_index.tolist(), "edge_weight": data.edge_weight.tolist()},
        lr_init=settings.lr_init,
        weight_decay=settings.weight_decay,
        optimizer=settings.optimizer,
        scheduler=settings.scheduler,
        warmup_epochs=settings.warmup_epochs,
        max_epochs=settings.num_epochs,
        class_weights=class_weights,
        model_class=settings.model_class,
        data_meta=data_meta(data, settings, fold, normalization),
        cuda_graphs=settings.cuda_graphs,
    )
    if settings.load_model and resume is None:
        load_weights_into(module, settings.load_model)
    dm = EEGDataModule(
        data,
        settings.train_batch_size,
        settings.val_batch_size,
        settings.test_batch_size,
        settings.num_workers,
        seed=seed,
        normalization=normalization,
    )
    history = HistoryCallback()
    # best: lowest val_loss; last: every epoch (Lightning >= 2.5 only refreshes its own save_last when the
    # best improves, so a separate monitor-less checkpoint keeps "last" truly last). Both are written at the
    # end of the training epoch, after HistoryCallback, so a resumed run keeps its complete history.
    ckpt = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    last_ckpt = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="last",
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks = [ckpt, last_ckpt, EarlyStopping(monitor="val_loss", mode="min", patience=settings.patience), history]
    logger = _make_logger(settings, mdir)
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer = L.Trainer(
        max_epochs=settings.num_epochs,
        accelerator=settings.accelerator,
        devices=_devices(settings.devices),
        strategy=settings.strategy,
        num_nodes=settings.num_nodes,
        precision=settings.precision,
        deterministic=True,
        accumulate_grad_batches=settings.accumulate_grad_batches,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(mdir),
        enable_progress_bar=settings.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*(negative|positive) samples in targets.*")
        if resume is not None:  # resuming reuses the member's folders on purpose
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        trainer.fit(module, datamodule=dm, ckpt_path=resume)
    fit_s = time.perf_counter() - t0
    if not trainer.is_global_zero:
        return None
    evaluated = ckpt.best_model_path if settings.eval_checkpoint == "best" and ckpt.best_model_path else str(last)
    module.load_state_dict(torch.load(evaluated, map_location="cpu", weights_only=False)["state_dict"])
    device = "cuda" if settings.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    probs = predict(module, dm.dataset("test"), settings.test_batch_size, device)
    np.savez_compressed(done, probs=probs)
    return {
        "probs": probs,
        "history": history.history,
        "epochs_run": int(trainer.current_epoch),
        "fit_seconds": fit_s,
        "evaluated_checkpoint": evaluated,
        "best_checkpoint": ckpt.best_model_path or None,
        "last_checkpoint": str(last),
        "best_val_loss": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
        "resumed_from": resume,
    }


def train_fold(
    data: PreparedData, settings: TrainSettings, out_dir: Path, fold: int, normalization=None
) -> dict | None:
    """Fit ``settings.ensemble`` TGMamba models on ``data`` (member 0 in ``out_dir``, member m in
    ``out_dir/member<m>``, each with best/last checkpoints and resumable), then on rank 0 evaluate the
    average of their test-split probabilities and fit the baseline. Returns the fold result (rank 0) or None.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = np.bincount(data.train.y, minlength=data.num_classes).astype(np.float64)
    if (counts == 0).any():
        raise DataError(None, f"fold {fold}: the training split lacks classes {np.flatnonzero(counts == 0).tolist()}")
    class_weights = (counts.sum() / (len(counts) * counts)).tolist() if settings.balance_classes else None
    members = []
    for m in range(settings.ensemble):
        mdir = out_dir if m == 0 else out_dir / f"member{m}"
        seed = settings.rand_seed + fold + 1000 * m
        members.append(_fit_member(data, settings, mdir, fold, seed, normalization, class_weights))
    if members[0] is None:  # not rank 0
        return None
    base = out_dir.resolve().parent
    rel = lambda p: str(Path(p).resolve().relative_to(base)) if p else None
    probs = np.mean([mb["probs"] for mb in members], axis=0)
    head = members[0]
    result = {
        "fold": fold,
        "task": data.task,
        "class_names": list(data.class_names),
        "tgmamba": compute_metrics(data.task, probs, data.test.y),
        "tgmamba_members": [compute_metrics(data.task, mb["probs"], data.test.y) for mb in members],
        "ensemble": settings.ensemble,
        "history": head.get("history", []),
        "epochs_run": head.get("epochs_run"),
        "fit_seconds": sum(mb.get("fit_seconds", 0.0) for mb in members),
        "evaluated_checkpoint": rel(head.get("evaluated_checkpoint")),
        "best_checkpoint": rel(head.get("best_checkpoint")),
        "last_checkpoint": rel(head.get("last_checkpoint")),
        "best_val_loss": head.get("best_val_loss"),
        "data_info": {k: v for k, v in data.info.items() if k not in ("scaler", "feature_standardizer")},
        "resumed_from": head.get("resumed_from"),
    }
    pred = {"y": data.test.y, "tgmamba": probs}
    if settings.baseline and data.test.raw is not None and data.train.raw is not None:
        bprobs = fit_bandpower_baseline(
            data.train.raw, data.train.y, data.test.raw, data.sfreq, seed=settings.rand_seed
        )
        result["baseline"] = compute_metrics(data.task, bprobs, data.test.y)
        pred["baseline"] = bprobs
    np.savez_compressed(out_dir / "predictions.npz", **pred)
    write_json(out_dir / "fold_metrics.json", result)
    return result


def _resolve_run_dir(settings: TrainSettings) -> tuple[Path, TrainSettings]:
    """The run folder (new, or the one being resumed) and the settings to use."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and not _is_rank_zero():  # DDP worker processes re-run the command: join rank 0's folder
        run_dir = Path(inherited)
        return run_dir, TrainSettings.from_dict(read_json(run_dir / "config.json")["settings"])
    if settings.resume:
        target = Path(settings.resume)
        run_dir = target if target.is_dir() else None
        if target.is_file() and target.suffix == ".ckpt":
            # <run>/[foldK/]checkpoints/last.ckpt
            run_dir = target.parent.parent
            if not (run_dir / "config.json").is_file():
                run_dir = run_dir.parent
        if run_dir is None or not (run_dir / "config.json").is_file():
            raise DataError(target, "cannot resume: not a run folder (or a checkpoint inside one) with config.json")
        if is_finished(run_dir):
            raise DataError(run_dir, "this run is finished (metrics.json exists); start a new run instead")
        stored = TrainSettings.from_dict(read_json(run_dir / "config.json")["settings"])
        for name in RUNTIME_FIELDS:
            setattr(stored, name, getattr(settings, name))
        return run_dir, stored
    name = settings.run_name or default_run_name(f"tgmamba-{settings.dataset}")
    return new_run_dir(settings.save_dir, name), settings


def run_training(settings: TrainSettings) -> dict | None:
    """Train and evaluate (blocked K-fold CV for eye-state, the stored splits otherwise).

    Writes ``<save_dir>/<run_name>/``: config.json, fold*/checkpoints/{best,last}.ckpt, fold*/fold_metrics.json,
    fold*/predictions.npz, logs, metrics.json (written last: it marks the run finished) and PNG plots.
    Returns the summary dict on rank 0 (None on other ranks).
    """
    if settings.threads:
        torch.set_num_threads(settings.threads)
    run_dir, settings = _resolve_run_dir(settings)
    run_dir = run_dir.resolve()
    rank0 = _is_rank_zero()
    if rank0:
        os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
        if not (run_dir / "config.json").is_file():
            write_json(run_dir / "config.json", {"settings": settings.to_dict(), "tgmamba_train": __version__})
    t0 = time.perf_counter()
    cv = settings.dataset == "eye-state"
    folds = [settings.fold] if settings.fold is not None else (list(range(settings.cv_folds)) if cv else [0])
    results = []
    for k in folds:
        fold_dir = run_dir / (f"fold{k}" if cv else "fold0")
        done = fold_dir / "fold_metrics.json"
        if done.is_file():
            results.append(read_json(done))
            continue
        data, norm = load_data(settings, k)
        log.info("fold %d: train %d, val %d, test %d windows", k, len(data.train), len(data.val), len(data.test))
        res = train_fold(data, settings, fold_dir, k, norm)
        if res is not None:
            results.append(res)
    if not rank0:
        return None
    summary = summarize_run(run_dir, results, settings, time.perf_counter() - t0)
    return summary


def summarize_run(run_dir: Path, results: list[dict], settings: TrainSettings, seconds: float) -> dict:
    """Aggregate fold results into metrics.json and plots."""
    task = results[0].get("task") or ("binary" if "auroc" in results[0]["tgmamba"] else "multiclass")
    keys = HEADLINE[task]
    models = ["tgmamba"] + (["baseline"] if all("baseline" in r for r in results) else [])
    summary = {
        "run_dir": str(run_dir),
        "dataset": settings.dataset,
        "task": task,
        "folds": [r["fold"] for r in results],
        "evaluation": (
            f"blocked {settings.cv_folds}-fold CV over time (contiguous blocks, gap {settings.gap} samples)"
            if settings.dataset == "eye-state"
            else "fixed patient/session-level splits from the dataset folder"
        ),
        "wall_seconds_this_invocation": seconds,
    }
    for m in models:
        summary[m] = summarize_folds([r[m] for r in results], keys)
    preds = [np.load(run_dir / (f"fold{r['fold']}") / "predictions.npz") for r in results]
    class_names = results[0].get("class_names") or [
        str(i) for i in range(len(results[0]["tgmamba"]["confusion_matrix"]))
    ]
    cm = np.sum([np.asarray(r["tgmamba"]["confusion_matrix"]) for r in results], axis=0)
    summary["tgmamba"]["confusion_matrix_pooled"] = cm.tolist()
    plots = {}
    if task == "binary":
        curves = {m: [(p["y"], p[m][:, 1]) for p in preds] for m in models}
        plots["roc"] = plot_roc(curves, run_dir / "roc_curve.png", title=f"ROC, {settings.dataset}")
    plots["confusion"] = plot_confusion(
        cm, class_names, run_dir / "confusion_matrix.png", title="TGMamba (pooled test folds)"
    )
    plots["curves"] = plot_training_curves([r["history"] for r in results], run_dir / "training_curves.png")
    summary["plots"] = {k: v.name for k, v in plots.items()}
    summary["per_fold"] = [
        {
            k: r.get(k)
            for k in (
                "fold",
                "epochs_run",
                "fit_seconds",
                "evaluated_checkpoint",
                "best_checkpoint",
                "last_checkpoint",
                "best_val_loss",
            )
        }
        for r in results
    ]
    write_json(run_dir / "metrics.json", summary)  # last: marks the run finished
    return summary
