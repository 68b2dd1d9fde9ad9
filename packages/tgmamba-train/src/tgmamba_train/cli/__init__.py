"""Command-line interfaces: tgmamba-train, tgmamba-eval, tgmamba-preprocess (and python -m tgmamba_train)."""
