"""The command line: ``dnntune train | datasets | models | demo ...``.

User errors print one clear message and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError

EXIT_USER_ERROR = 2


def _console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


class EpochProgress:
    """A rich progress bar over epochs showing the live train loss and validation metric."""

    def __init__(self, epochs: int, trainer, quiet: bool = False, label: str = "train"):
        self.quiet = quiet
        self.trainer = trainer  # its metric is known once the data is loaded
        if quiet:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=_console(), transient=False)
        self.task = self.progress.add_task(label, total=epochs, status="")
        self.progress.start()

    def __call__(self, epoch: int, row: dict) -> bool:
        if not self.quiet:
            metric = self.trainer.metric
            val = row.get(f"val_{metric}")
            status = f"loss {row['train_loss']:.4f}" + (f"  val {metric} {val:.4f}" if val is not None else "")
            self.progress.update(self.task, completed=epoch, status=status)
        return False

    def close(self) -> None:
        if not self.quiet:
            self.progress.stop()


def _print_metrics(summary: dict, out_dir: Path | None, quiet: bool) -> None:
    if quiet:
        return
    from rich.table import Table

    con = _console(stderr=False)
    metrics = summary["metrics"]
    shown = ("accuracy", "balanced_accuracy", "f1_macro", "loss", "mse", "mae", "r2")
    keys = [k for k in next(iter(metrics.values())) if k in shown]
    table = Table(title=f"{summary['epochs']} epochs, {summary['params']:,} parameters, "
                        f"{summary['wall_seconds']:.1f} s")
    table.add_column("split")
    for k in keys:
        table.add_column(k, justify="right")
    for split, vals in metrics.items():
        table.add_row(split, *[f"{vals[k]:.4f}" if k in vals else "" for k in keys])
    con.print(table)
    if out_dir is not None:
        con.print(f"run folder: {out_dir}")


def cmd_train(args) -> int:
    from .config import load_recipe
    from .engine.trainer import Trainer

    recipe = load_recipe(args.recipe, args.set, args.seed)
    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    trainer = Trainer(recipe, out_dir=out, resume=not args.fresh)
    progress = None
    if not args.quiet and not args.json:
        progress = EpochProgress(recipe.train.epochs, trainer)
        trainer.add_hook(progress)
    try:
        trainer.fit()
    finally:
        if progress is not None:
            progress.close()
    summary = json.loads((out / "summary.json").read_text())
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_metrics(summary, out, args.quiet)
    return 0


def cmd_datasets(args) -> int:
    from .data import DATASETS

    return _list_registry(DATASETS, args, extra=lambda e: f"{e.meta.get('kind', '')}, {e.meta.get('task', '')}")


def cmd_models(args) -> int:
    from .models import MODELS

    return _list_registry(MODELS, args)


def _list_registry(registry, args, extra=None) -> int:
    rows = []
    for e in registry:
        rows.append({"name": e.name, "doc": e.doc, "info": extra(e) if extra else "",
                     "knobs": [{"name": n, "type": t, "default": d} for n, t, d in e.knob_table()]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    con = _console(stderr=False)
    for r in rows:
        con.print(f"[bold]{r['name']}[/bold]  {r['doc']}" + (f"  [dim]({r['info']})[/dim]" if r["info"] else ""))
        for k in r["knobs"]:
            con.print(f"    {k['name']:<20} {k['type']:<28} default {k['default']}")
    return 0


def cmd_demo(args) -> int:
    from .config import validate_recipe
    from .presets import load_preset

    raw = load_preset("mnist1d-strong")
    recipe = validate_recipe(raw, "preset mnist1d-strong")
    out = Path(args.out)
    con = _console(stderr=False)
    con.print("dnntune demo: training the strong hand-written MNIST-1D recipe "
              "(examples/mnist1d-strong.yaml) on MNIST-1D's own 4000/1000 split")
    from .engine.trainer import Trainer

    trainer = Trainer(recipe, out_dir=out, resume=False)
    progress = EpochProgress(recipe.train.epochs, trainer, quiet=args.quiet)
    trainer.add_hook(progress)
    try:
        trainer.fit()
    finally:
        progress.close()
    summary = json.loads((out / "summary.json").read_text())
    _print_metrics(summary, out, False)
    test = summary["metrics"]["test"]
    con.print(f"MNIST-1D test accuracy {test['accuracy']:.4f} (the dataset authors' reference CNN: ~0.94)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="dnntune", description="Tune and optimize the training of deep neural "
                                "networks in PyTorch.")
    p.add_argument("--version", action="version", version=f"dnntune {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train one concrete recipe", description="Train one recipe and write "
                       "summary.json, model.safetensors, recipe.yaml and per-epoch curves to the run folder.")
    t.add_argument("recipe", help="recipe YAML file")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a field (repeatable), e.g. --set optim.lr=0.01")
    t.add_argument("--out", help="run folder (default runs/<recipe name>)")
    t.add_argument("--seed", type=int, help="override the recipe's seed")
    t.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the run folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar or table")
    t.add_argument("--json", action="store_true", help="print summary.json to stdout")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("datasets", help="list datasets and their knobs")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_datasets)
    m = sub.add_parser("models", help="list model families and their knobs")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    demo = sub.add_parser("demo", help="the main job on the embedded default (MNIST-1D)")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)
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
        print(f"dnntune: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("dnntune: interrupted; completed epochs are in the checkpoint", file=sys.stderr)
        return 130
