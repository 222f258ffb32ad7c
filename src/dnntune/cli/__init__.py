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
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return args.func(args)
    except UserError as e:
        from ..search.study import StudyFailed

        print(f"dnntune: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, StudyFailed) else EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("dnntune: interrupted; completed epochs and trials are saved: run the same command again to continue",
              file=sys.stderr)
        return 130
