"""``dnntune`` commands: the main job on the embedded default."""

from __future__ import annotations

import json
from pathlib import Path

from ._common import EpochProgress, _console


def cmd_demo(args) -> int:
    """Tune MNIST-1D from the default space (~5 minutes), retrain the best, test it once, and compare
    with the dataset authors' reference CNN trained here with the same engine."""
    import shutil

    from rich.table import Table

    from ..config import validate_recipe
    from ..engine.trainer import Trainer
    from ..presets import load_preset
    from ..search import complete_experiment, tune

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)  # the demo's own folder: every demo starts a fresh study
    from ..engine.runfolder import prepare_out_dir

    prepare_out_dir(out)
    con = _console(stderr=False)
    experiment = complete_experiment(load_preset("mnist1d"))
    if args.timeout is not None:
        experiment["search"]["timeout"] = args.timeout
    budget = experiment["search"]["timeout"]
    con.print(f"dnntune demo: tuning MNIST-1D from the default search space for {budget:.0f} s with "
              f"{experiment['search']['workers']} workers (examples/mnist1d.yaml), then retraining the best recipe "
              "on train+val and testing it once")
    summary = tune(experiment, out, study_name="mnist1d-demo", quiet=args.quiet, source="preset mnist1d")
    con.print("training the dataset authors' reference CNN (examples/mnist1d-cnn.yaml) with the same engine")
    reference = validate_recipe(load_preset("mnist1d-cnn"), "preset mnist1d-cnn")
    trainer = Trainer(reference, out_dir=out / "reference-cnn", resume=False)
    trainer.add_callback(EpochProgress(reference.train.epochs, quiet=args.quiet))
    ref = trainer.fit()
    table = Table(title="MNIST-1D test accuracy (4000/1000 split; test evaluated once per model)")
    table.add_column("model")
    table.add_column("test accuracy", justify="right")
    table.add_column("parameters", justify="right")
    table.add_row("authors' reference CNN, published", "~0.94", "")
    table.add_row("authors' reference CNN, trained here", f"{ref.metrics['test']['accuracy']:.4f}", f"{ref.params:,}")
    best_summary = json.loads((out / "best" / "summary.json").read_text())
    best = summary["best"]
    table.add_row(f"tuned by dnntune ({budget:.0f} s, trial {best['trial']})", f"{summary['test']['accuracy']:.4f}",
                  f"{best_summary['params']:,}")
    con.print(table)
    t = summary["trials"]
    con.print(f"trials: {t['complete']} complete, {t['pruned']} pruned, {t['fail']} failed; "
              f"study: {summary['storage']} (name {summary['study']}); best model and recipe: {out / 'best'}")
    return 0


def add_commands(sub) -> None:
    """Register this module's commands on the top-level subparsers."""
    demo = sub.add_parser("demo", help="the main job on the embedded default: tune MNIST-1D for ~5 minutes")
    demo.add_argument("--out", default="runs/demo", help="run folder (replaced on every demo)")
    demo.add_argument("--timeout", type=float, help="search budget in seconds (default 300)")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)
