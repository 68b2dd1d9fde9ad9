"""tgmamba-eval: evaluate a tgmamba-train checkpoint on a split; writes metrics.json and plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_flag, quiet_libraries, run_cli

__all__ = ["build_parser", "evaluate_checkpoint", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tgmamba-eval", description=__doc__)
    p.add_argument(
        "checkpoint", help="a .ckpt written by tgmamba-train (e.g. results/<run>/fold0/checkpoints/best.ckpt)"
    )
    add_flag(p, "split", choices=("train", "val", "test"), default="test")
    add_flag(p, "data-dir", default=None, help="evaluate on this preprocessed folder (or eye-state .arff/.npz) instead")
    add_flag(p, "out", default=None, help="output folder (default: <run>/eval-<split>; never overwritten)")
    add_flag(p, "batch-size", type=int, default=128)
    add_flag(p, "accelerator", default="cpu", choices=("cpu", "gpu", "cuda"))
    return p


def evaluate_checkpoint(
    checkpoint: str | Path,
    split: str = "test",
    data_dir: str | None = None,
    out: str | Path | None = None,
    batch_size: int = 128,
    device: str = "cpu",
) -> dict:
    """Evaluate ``checkpoint`` on ``split``; returns the metrics dict (also written to <out>/metrics.json)."""
    from ..checkpoint import check_compatible, load_checkpoint_module
    from ..data.datamodule import EEGDataModule
    from ..experiment import load_data, predict
    from ..metrics import compute_metrics
    from ..reports import plot_confusion, plot_roc
    from ..runs import new_run_dir, write_json
    from ..settings import TrainSettings

    checkpoint = Path(checkpoint)
    module, hp = load_checkpoint_module(checkpoint)
    meta = hp.get("data_meta") or {}
    if "settings" not in meta:
        raise ValueError(f"{checkpoint}: checkpoint has no data description (data_meta.settings)")
    settings = TrainSettings.from_dict(meta["settings"])
    if data_dir is not None:
        settings.data_dir = str(data_dir)
        if (Path(data_dir) / "manifest.json").is_file():
            settings.dataset = "disk"
    data, norm = load_data(settings, int(meta.get("fold", 0)))
    V, Lq, F = data.sample_shape
    check_compatible(hp["model_config"], V, F, data.num_classes, where=f"{checkpoint} vs data {data.name!r}")
    if data.task != hp["task"]:
        from ..errors import ConfigMismatchError

        raise ConfigMismatchError(f"{checkpoint}: checkpoint task {hp['task']!r} but data task {data.task!r}")
    dm = EEGDataModule(data, normalization=norm)
    probs = predict(module, dm.dataset(split), batch_size, device)
    y = data.split(split).y
    metrics = compute_metrics(data.task, probs, y)
    if out is None:
        run_dir = checkpoint.parent.parent
        out = new_run_dir(run_dir, f"eval-{split}")
    else:
        out = Path(out)
        out = new_run_dir(out.parent if str(out.parent) else ".", out.name)
    result = {
        "checkpoint": str(checkpoint),
        "dataset": data.name,
        "split": split,
        "fold": meta.get("fold"),
        "metrics": metrics,
    }
    if data.task == "binary":
        plot_roc({"TGMamba": [(y, probs[:, 1])]}, out / "roc_curve.png", title=f"ROC, {data.name} {split}")
    plot_confusion(metrics["confusion_matrix"], data.class_names, out / "confusion_matrix.png")
    write_json(out / "metrics.json", result)
    result["out"] = str(out)
    return result


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    from ..metrics import HEADLINE
    from ..reports import format_table

    device = "cuda" if args.accelerator in ("gpu", "cuda") else "cpu"
    res = evaluate_checkpoint(args.checkpoint, args.split, args.data_dir, args.out, args.batch_size, device)
    m = res["metrics"]
    keys = HEADLINE["binary" if "auroc" in m else "multiclass"]
    print(format_table({"TGMamba": m}, keys, title=f"{res['dataset']} {res['split']} split (n = {m['n']})"))
    print(f"results: {res['out']}")
    return 0


def main(argv=None) -> int:
    sys.exit(run_cli(_main, argv))


if __name__ == "__main__":
    main()
