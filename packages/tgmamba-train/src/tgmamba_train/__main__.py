"""python -m tgmamba_train {train,eval,preprocess} ...: the three CLIs as subcommands."""

from __future__ import annotations

import sys

USAGE = "usage: python -m tgmamba_train {train,eval,preprocess} [options]   (-h after a subcommand for help)"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        from .cli.train import main as run
    elif cmd in ("eval", "evaluate"):
        from .cli.evaluate import main as run
    elif cmd == "preprocess":
        from .cli.preprocess import main as run
    else:
        print(f"unknown subcommand {cmd!r}\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    run(rest)


if __name__ == "__main__":
    main()
