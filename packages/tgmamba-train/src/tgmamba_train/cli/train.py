"""tgmamba-train: train and evaluate TGMamba. With no arguments: blocked 5-fold CV on the embedded EEG Eye
State recording, on CPU, with a logistic-regression band-power baseline under the same folds."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields

from ..settings import DATASETS, TrainSettings
from ._common import add_flag, quiet_libraries, run_cli

__all__ = ["build_parser", "main", "settings_from_args"]

_DEF = TrainSettings()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tgmamba-train",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bool_ = argparse.BooleanOptionalAction
    d = p.add_argument_group("data")
    add_flag(d, "dataset", choices=DATASETS, default=_DEF.dataset, help="eye-state (embedded) or a preprocessed corpus")
    add_flag(d, "data-dir", default=None, help="folder written by tgmamba-preprocess (or an EEG Eye State .arff/.npz)")
    add_flag(d, "cv-folds", type=int, default=_DEF.cv_folds, help="blocked K-fold CV over time (eye-state)")
    add_flag(d, "fold", type=int, default=None, help="run only this fold")
    add_flag(d, "window", type=int, default=_DEF.window, help="eye-state window length in samples (128 = 1 s)")
    add_flag(d, "stride", type=int, default=_DEF.stride, help="eye-state window stride in samples")
    add_flag(
        d,
        "label-policy",
        choices=("drop", "majority", "center"),
        default=_DEF.label_policy,
        help="windows straddling an eye-state transition: drop (counted) or label by majority/centre",
    )
    add_flag(
        d,
        "features",
        choices=("bands", "bands-abs", "bands-both", "stft", "raw"),
        default=_DEF.features,
        help="eye-state input features",
    )
    add_flag(d, "gap", type=int, default=_DEF.gap, help="samples left out between train/val/test blocks")
    add_flag(d, "val-fraction", type=float, default=_DEF.val_fraction, help="contiguous validation stretch")
    add_flag(
        d,
        "electrode-features",
        choices=("onehot", "positions", "none"),
        default=_DEF.electrode_features,
        help="electrode identity appended to each vertex's features (eye-state)",
    )
    add_flag(d, "graph-top-k", type=int, default=_DEF.graph_top_k, help="neighbours kept per electrode")

    m = p.add_argument_group("model (TGMamba)")
    add_flag(m, "conv_type", default=_DEF.conv_type, choices=("gcnconv", "graphconv", "chebconv", "gatv2conv", "none"))
    add_flag(m, "seq_pool_type", default=_DEF.seq_pool_type, choices=("last", "mean", "max"))
    add_flag(m, "vertex_pool_type", default=_DEF.vertex_pool_type, choices=("mean", "max"))
    add_flag(m, "model_dim", type=int, default=_DEF.model_dim, help="d_model")
    add_flag(m, "state_expansion_factor", type=int, default=_DEF.state_expansion_factor, help="d_state")
    add_flag(m, "local_conv_width", type=int, default=_DEF.local_conv_width, help="d_conv")
    add_flag(m, "expand", type=int, default=_DEF.expand, help="block expansion (d_inner = expand * d_model)")
    add_flag(m, "num_tgmamba_layers", type=int, default=_DEF.num_tgmamba_layers)
    add_flag(m, "rmsnorm", action=bool_, default=_DEF.rmsnorm)
    add_flag(m, "edge_learner_layers", type=int, default=_DEF.edge_learner_layers)
    add_flag(m, "edge_learner_attention", action=bool_, default=_DEF.edge_learner_attention)
    add_flag(m, "edge_learner_time_varying", action=bool_, default=_DEF.edge_learner_time_varying)
    add_flag(m, "attn_time_varying", action=bool_, default=_DEF.attn_time_varying)
    add_flag(m, "attn_threshold", type=float, default=_DEF.attn_threshold)
    add_flag(m, "attn_softmax_temp", type=float, default=_DEF.attn_softmax_temp)
    add_flag(m, "init_skip_param", type=float, default=_DEF.init_skip_param)
    add_flag(m, "dropout", type=float, default=_DEF.dropout)

    o = p.add_argument_group("optimisation")
    add_flag(o, "train_batch_size", type=int, default=_DEF.train_batch_size)
    add_flag(o, "val_batch_size", type=int, default=_DEF.val_batch_size)
    add_flag(o, "test_batch_size", type=int, default=_DEF.test_batch_size)
    add_flag(o, "num_workers", type=int, default=_DEF.num_workers)
    add_flag(o, "lr_init", type=float, default=_DEF.lr_init)
    add_flag(o, "weight_decay", type=float, default=_DEF.weight_decay)
    add_flag(o, "optimizer", choices=("adamw", "adam", "sgd"), default=_DEF.optimizer)
    add_flag(o, "scheduler", choices=("cosine", "none"), default=_DEF.scheduler)
    add_flag(o, "warmup_epochs", type=int, default=_DEF.warmup_epochs)
    add_flag(o, "num_epochs", type=int, default=_DEF.num_epochs)
    add_flag(o, "patience", type=int, default=_DEF.patience, help="early-stopping patience (epochs, val_loss)")
    add_flag(o, "accumulate_grad_batches", type=int, default=_DEF.accumulate_grad_batches)
    add_flag(
        o,
        "eval-checkpoint",
        choices=("best", "last"),
        default=_DEF.eval_checkpoint,
        help="checkpoint evaluated on the test split (best = lowest val_loss)",
    )
    add_flag(
        o,
        "ensemble",
        type=int,
        default=_DEF.ensemble,
        help="TGMamba models per fold (different seeds); their test probabilities are averaged",
    )
    add_flag(o, "balance_classes", action=bool_, default=_DEF.balance_classes, help="class-weighted loss")

    r = p.add_argument_group("runtime")
    add_flag(r, "save_dir", default=_DEF.save_dir, help="results root; a run writes <save_dir>/<run-name>/")
    add_flag(r, "run-name", default=None, help="run folder name (a suffix is added if it exists)")
    add_flag(r, "rand_seed", type=int, default=_DEF.rand_seed)
    add_flag(r, "load_model", default=None, help="initialise weights from a .ckpt or save_pretrained folder")
    add_flag(r, "devices", default=_DEF.devices, help="e.g. 1, 2, auto, or 0,1")
    add_flag(r, "accelerator", default=_DEF.accelerator, help="cpu, gpu, auto")
    add_flag(r, "strategy", default=_DEF.strategy, help="auto, ddp, ddp_spawn, ...")
    add_flag(r, "precision", default=_DEF.precision, help="32-true, bf16-mixed, 16-mixed")
    add_flag(
        r,
        "cuda-graphs",
        action=bool_,
        default=_DEF.cuda_graphs,
        help="replay each training step's forward+backward from a CUDA graph (single-process GPU training; "
        "fixed-length clips: the last, smaller batch gets its own graph)",
    )
    add_flag(r, "num-nodes", type=int, default=1, help="nodes for multi-node DDP (launch with torchrun/SLURM)")
    add_flag(r, "resume", default=None, help="run folder or last.ckpt to continue (at most one epoch is lost)")
    add_flag(r, "logger", choices=("csv", "tensorboard", "wandb", "none"), default=_DEF.logger)
    add_flag(
        r,
        "threads",
        type=int,
        default=None,
        help="torch CPU threads (default: all cores, at most 2 per process under DDP)",
    )
    add_flag(r, "progress", action=bool_, default=True, help="progress bar")
    add_flag(r, "baseline", action=bool_, default=True, help="also fit the band-power logistic-regression baseline")
    add_flag(r, "model-class", default=_DEF.model_class, help=argparse.SUPPRESS)
    return p


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    names = {f.name for f in fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in vars(args).items() if k in names})


def _print_summary(summary: dict, seconds: float) -> None:
    from ..metrics import HEADLINE
    from ..reports import format_table

    keys = HEADLINE[summary["task"]]
    rows = {m: summary[m] for m in ("tgmamba", "baseline") if m in summary}
    rows = {("TGMamba" if m == "tgmamba" else "baseline (log band power + LR)"): v for m, v in rows.items()}
    title = (
        f"{summary['dataset']}: {summary['evaluation']}, test metrics mean ± std over {len(summary['folds'])} fold(s)"
    )
    print()
    print(format_table(rows, keys, title=title))
    print(f"results: {summary['run_dir']}  (metrics.json, {', '.join(summary['plots'].values())}, fold*/checkpoints/)")
    print(f"wall time: {seconds:.1f} s")


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    quiet_libraries()
    if settings.threads is None and settings.accelerator == "cpu":
        import torch

        n = os.cpu_count() or 1
        world = int(settings.devices) if settings.devices.isdigit() else 1
        torch.set_num_threads(max(1, n // max(1, world)))
    from ..experiment import run_training

    t0 = time.perf_counter()
    summary = run_training(settings)
    if summary is not None:
        _print_summary(summary, time.perf_counter() - t0)
    return 0


def main(argv=None) -> int:
    sys.exit(run_cli(_main, argv))


if __name__ == "__main__":
    main()
