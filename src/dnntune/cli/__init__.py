"""The command line: ``dnntune train | tune | worker | best | report | ablate | lr-find | demo ...``.

One module per command group; each registers its commands with ``add_commands(sub)``. User errors print
one clear message and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from . import _demo, _deploy, _insight, _serve, _train, _tune

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="dnntune", description="Tune and optimize the training of deep neural "
                                "networks in PyTorch.")
    p.add_argument("--version", action="version", version=f"dnntune {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for group in (_train, _tune, _insight, _demo, _deploy, _serve):
        group.add_commands(sub)
    for command in sub.choices.values():  # every command can import the user's model families and datasets
        command.add_argument("--plugin", action="append", default=[], dest="plugins", metavar="MODULE",
                             help="import this module (or entry point of group dnntune.plugins) first, so its "
                             "registered model families and datasets can be named (repeatable)")
    return p


def _load_plugins(args) -> None:
    """``--plugin`` modules: on sys.path, beside the command's experiment/recipe file, or here."""
    from pathlib import Path

    from ..plugins import load_plugins

    names = getattr(args, "plugins", None)
    if names:
        path = getattr(args, "recipe", None) or getattr(args, "experiment", None)
        load_plugins(names, base_dir=Path(path).parent if isinstance(path, str) else None, field="--plugin")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        _load_plugins(args)
        return args.func(args)
    except UserError as e:
        from ..search.study import StudyFailed

        print(f"dnntune: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, StudyFailed) else EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("dnntune: interrupted; completed epochs and trials are saved: run the same command again to continue",
              file=sys.stderr)
        return 130
