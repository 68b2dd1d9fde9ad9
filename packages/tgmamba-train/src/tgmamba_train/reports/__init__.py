"""Reports: PNG plots (ROC curve, confusion matrix, training curves) and plain-text metric tables."""

from .plots import plot_confusion, plot_roc, plot_training_curves
from .table import format_table

__all__ = ["format_table", "plot_confusion", "plot_roc", "plot_training_curves"]
