"""tgmamba_train: preprocessing, training and evaluation of TGMamba on EEG."""

from ._version import __version__

__all__ = ["__version__"]
