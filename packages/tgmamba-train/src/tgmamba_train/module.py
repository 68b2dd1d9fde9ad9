"""The LightningModule that trains :class:`tgmamba_models.TGMambaClassifier` on graph-structured EEG."""

from __future__ import annotations

import importlib
import math

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import SumMetric
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy, MulticlassF1Score

from tgmamba_models.cuda_graphs import CUDAGraphedForward

__all__ = ["DEFAULT_MODEL", "TGMambaLightning", "build_model"]

DEFAULT_MODEL = "tgmamba_models:TGMambaClassifier"


def _resolve(path: str):
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)


def build_model(model_config: dict, model_class: str = DEFAULT_MODEL) -> torch.nn.Module:
    """Instantiate ``model_class`` ("module:Class") from its config dict.

    The class's config type is looked up as ``<Class>Config`` in the same module namespace (for the default,
    ``tgmamba_models.TGMambaClassifierConfig``); the model is built as ``Class(Config(**model_config))``.
    """
    cls = _resolve(model_class)
    mod, _, name = model_class.partition(":")
    cfg_cls = getattr(importlib.import_module(mod), f"{name}Config")
    return cls(cfg_cls(**model_config))


class TGMambaLightning(L.LightningModule):
    """Classification training of a graph model on (B, V, L, F) inputs with a fixed electrode graph.

    Args:
        model_config: kwargs of the model's config (num_vertices, in_features, num_classes, ...).
        task: "binary" or "multiclass" (binary models still output 2 logits; the score is softmax[:, 1]).
        graph: {"edge_index": (2, E) nested list, "edge_weight": (E,) list}; stored in the checkpoint.
        optimizer: "adamw" | "adam" | "sgd"; scheduler: "cosine" | "none"; warmup_epochs linear warm-up.
        data_meta: JSON-serialisable description of the data (dataset, channels, sample shape, fold, scalers),
            kept in the checkpoint so that ``tgmamba-eval`` can rebuild the split and check compatibility.
        cuda_graphs: replay the training forward+backward from CUDA graphs
            (:class:`tgmamba_models.cuda_graphs.CUDAGraphedForward`, one graph per batch shape, at most two);
            evaluation and CPU runs stay eager. Single-process training only. A replay skips the model's per-batch
            NaN check (the data stores are checked when they are read, and a non-finite loss still stops training).

    Shapes: forward(x (B, V, L, F)) -> logits (B, num_classes).
    """

    def __init__(
        self,
        model_config: dict,
        task: str,
        graph: dict,
        lr_init: float = 1e-3,
        weight_decay: float = 1e-2,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        warmup_epochs: int = 0,
        max_epochs: int = 10,
        class_weights: list[float] | None = None,
        model_class: str = DEFAULT_MODEL,
        data_meta: dict | None = None,
        cuda_graphs: bool = False,
    ):
        super().__init__()
        if task not in ("binary", "multiclass"):
            raise ValueError(f"task must be 'binary' or 'multiclass', got {task!r}")
        if optimizer not in ("adamw", "adam", "sgd"):
            raise ValueError(f"optimizer must be 'adamw', 'adam' or 'sgd', got {optimizer!r}")
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"scheduler must be 'cosine' or 'none', got {scheduler!r}")
        self.save_hyperparameters()
        self.model = build_model(model_config, model_class)
        self.register_buffer("edge_index", torch.as_tensor(graph["edge_index"], dtype=torch.long), persistent=True)
        self.register_buffer("edge_weight", torch.as_tensor(graph["edge_weight"], dtype=torch.float32), persistent=True)
        cw = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", cw, persistent=False)
        nc = int(model_config["num_classes"])
        if task == "binary":
            self.val_auroc = BinaryAUROC()
            # validation samples and positives (summed over processes): AUROC is undefined with one class
            self.val_count = SumMetric()
            self.val_pos = SumMetric()
        self._graphed = CUDAGraphedForward(self.model) if cuda_graphs else None
        self.val_acc = MulticlassAccuracy(num_classes=nc, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes=nc, average="macro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._graphed is not None:  # graphs in training on CUDA; eager otherwise
            return self._graphed(x, self.edge_index, self.edge_weight)
        return self.model(x, self.edge_index, self.edge_weight)

    def setup(self, stage: str) -> None:
        if self._graphed is not None and self.trainer.world_size > 1:
            raise ValueError(
                f"cuda_graphs supports single-process training only, got world_size={self.trainer.world_size}: "
                "train without --cuda-graphs under DDP"
            )

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, weight=self.class_weights)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self._loss(self(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {self.current_epoch}")
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = self._loss(logits, y)
        probs = logits.float().softmax(-1)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        self.val_acc.update(probs, y)
        self.val_f1.update(probs, y)
        self.log("val_acc", self.val_acc, on_epoch=True, batch_size=x.shape[0])
        self.log("val_f1", self.val_f1, on_epoch=True, batch_size=x.shape[0])
        if self.hparams.task == "binary":
            self.val_auroc.update(probs[:, 1], y)
            self.val_count.update(torch.tensor(float(y.numel()), device=y.device))
            self.val_pos.update(y.sum().float())

    def on_validation_epoch_end(self):
        """Log the epoch's validation AUROC, or NaN when the validation data hold a single class (a block of
        one class in a blocked split): torchmetrics would report 0.0 there, which reads as a real score."""
        if self.hparams.task != "binary":
            return
        n, pos = float(self.val_count.compute()), float(self.val_pos.compute())
        auroc = self.val_auroc.compute() if 0 < pos < n else torch.tensor(float("nan"), device=self.device)
        self.log("val_auroc", auroc, prog_bar=True)
        for m in (self.val_auroc, self.val_count, self.val_pos):
            m.reset()

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).float().softmax(-1)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr_init, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr_init, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=hp.lr_init, weight_decay=hp.weight_decay, momentum=0.9)
        if hp.scheduler == "none":
            return opt
        total, warm = max(1, int(hp.max_epochs)), max(0, int(hp.warmup_epochs))

        def factor(epoch: int) -> float:
            if epoch < warm:
                return (epoch + 1) / (warm + 1)
            t = (epoch - warm) / max(1, total - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t))) * 0.99 + 0.01

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
