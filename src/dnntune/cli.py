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
    """A trainer callback: a rich progress bar over epochs showing the live train loss and validation metric."""

    def __init__(self, epochs: int, quiet: bool = False, label: str = "train"):
        self.quiet = quiet
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

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> bool:
        if not self.quiet:
            metric = trainer.metric
            val = row.get(f"val_{metric}")
            status = f"loss {row['train_loss']:.4f}" + (f"  val {metric} {val:.4f}" if val is not None else "")
            self.progress.update(self.task, completed=row["epoch"], status=status)
        return False

    def on_fit_end(self, trainer, result) -> None:
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
    from .engine.runfolder import prepare_out_dir

    out = prepare_out_dir(Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem)
    trainer = Trainer(recipe, out_dir=out, resume=not args.fresh)
    if not args.quiet and not args.json:
        trainer.add_callback(EpochProgress(recipe.train.epochs))
    from .report.tracking import fit_tracked

    fit_tracked(trainer, args.tracker)
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
    """Tune MNIST-1D from the default space (~5 minutes), retrain the best, test it once, and compare
    with the dataset authors' reference CNN trained here with the same engine."""
    import shutil

    from rich.table import Table

    from .config import validate_recipe
    from .engine.trainer import Trainer
    from .presets import load_preset
    from .search import complete_experiment, tune

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)  # the demo's own folder: every demo starts a fresh study
    from .engine.runfolder import prepare_out_dir

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


def _experiment_from_args(args) -> tuple[dict, str]:
    from .config import apply_overrides, read_yaml
    from .search import complete_experiment

    if args.experiment:
        raw, source = read_yaml(args.experiment), args.experiment
        if args.data:
            raw["data"] = {**(raw.get("data") or {}), "name": args.data}
    elif args.data:
        raw, source = {"data": {"name": args.data}}, f"default space for {args.data}"
    else:
        raise UserError("tune: give an EXPERIMENT.yaml or --data NAME (see `dnntune datasets`)")
    # overrides of data/seed/search first (they decide the default space), then the default space is filled
    # in for an experiment that names only the data, then every other override lands on the full experiment
    early = [s for s in args.set or [] if s.split("=", 1)[0].strip().split(".")[0] in ("data", "seed", "search")]
    late = [s for s in args.set or [] if s not in early]
    raw = complete_experiment(apply_overrides(raw, early))
    raw = apply_overrides(raw, late)
    search = dict(raw.get("search") or {})
    for flag, key in (("n_trials", "n_trials"), ("timeout", "timeout"), ("workers", "workers"),
                      ("sampler", "sampler"), ("pruner", "pruner"), ("epoch_budget", "epoch_budget"),
                      ("final", "final")):
        value = getattr(args, flag, None)
        if value is not None:
            search[key] = value
    if args.timeout is not None and args.n_trials is None:
        search["n_trials"] = None  # a time budget alone: as many trials as fit
    raw["search"] = search
    return complete_experiment(raw), source


def cmd_tune(args) -> int:
    from .config import SearchSection
    from .search import tune

    experiment, source = _experiment_from_args(args)
    try:
        SearchSection(**experiment["search"])
    except Exception as e:  # pydantic ValidationError → field message
        from pydantic import ValidationError

        from .config import _format_validation

        if isinstance(e, ValidationError):
            raise UserError(_format_validation("search", e)) from None
        raise
    name = args.study or (Path(args.experiment).stem if args.experiment else f"{args.data}-default")
    from .engine.runfolder import prepare_out_dir

    out = prepare_out_dir(Path(args.out) if args.out else Path("runs") / name)
    summary = tune(experiment, out, storage_url=args.storage, study_name=name, quiet=args.quiet or args.json,
                   source=source, tracker=args.tracker)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        _print_tune_summary(summary, out)
    return 0


def _print_tune_summary(summary: dict, out: Path) -> None:
    from rich.table import Table

    con = _console(stderr=False)
    t = summary["trials"]
    best = summary["best"]
    con.print(f"trials: {t['complete']} complete, {t['pruned']} pruned, {t['fail']} failed "
              f"in {summary['wall_seconds']:.0f} s")
    metric = next(iter(summary["objectives"]))
    con.print(f"best trial {best['trial']}: val {metric} {best['value']:.4f}")
    table = Table(title="best recipe, tested once")
    table.add_column("split")
    shown = [k for k in ("accuracy", "balanced_accuracy", "f1_macro", "mse", "mae", "r2") if k in summary["test"]]
    for k in shown:
        table.add_column(k, justify="right")
    table.add_row("test", *[f"{summary['test'][k]:.4f}" for k in shown])
    con.print(table)
    con.print(f"study: {summary['storage']} (name {summary['study']}); best model: {out / 'best'}")
    if summary.get("report"):
        con.print(f"report: {summary['report']}")


def cmd_worker(args) -> int:
    from .engine.runfolder import prepare_out_dir
    from .search import worker_main

    out = prepare_out_dir(Path(args.out) if args.out else Path("runs") / args.study)
    worker_main(args.storage, args.study, out, args.index, args.workers, args.threads, quiet=args.quiet)
    return 0


def cmd_best(args) -> int:
    import optuna

    from .config import validate_recipe
    from .search.selection import best_trial, trial_value
    from .search.storage import open_storage
    from .search.study import Objectives, load_study, stored_search

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(args.storage)
    study = load_study(storage, args.study)
    stored_search(study)  # a clear error for a study dnntune did not create
    objectives = Objectives.of_study(study)
    best = best_trial(study, objectives.directions)
    if best is None:
        raise UserError(f"--study: {args.study!r} has no complete trial yet")
    recipe = validate_recipe(best.user_attrs["recipe"], f"trial {best.number}")
    d = recipe.to_dict()
    d["train"]["checkpoint"] = True
    value = trial_value(best, objectives.directions[0])
    text = (f"# best trial {best.number} of study {args.study}: val {objectives.names[0]} {value:.6g}\n"
            + validate_recipe(d).to_yaml())
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


def cmd_lr_find(args) -> int:
    from .config import load_recipe
    from .engine.lr_find import lr_find

    recipe = load_recipe(args.recipe, args.set)
    from .engine.runfolder import prepare_out_dir

    out = prepare_out_dir(Path(args.out) if args.out else Path("runs") / f"{Path(args.recipe).stem}-lr-find")
    bar = None
    if not (args.quiet or args.json):
        from rich.progress import Progress

        bar = Progress(console=_console(), transient=True)
        task = bar.add_task("lr range test", total=args.steps)
        bar.start()
    try:
        result = lr_find(recipe, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps,
                         on_step=(lambda i, lr, loss: bar.update(task, completed=i)) if bar else None)
    finally:
        if bar is not None:
            bar.stop()
    paths = result.save(out)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif args.quiet:
        print(f"{result.suggestion:.3g}")
    else:
        con = _console(stderr=False)
        con.print(f"suggested lr {result.suggestion:.3g} ({result.rule}: minimum at {result.min_loss_lr:.3g}); "
                  f"{len(result.lrs)} steps, {result.stopped}")
        con.print(f"plot: {paths['png']}  data: {paths['json']}")
    return 0


def cmd_ablate(args) -> int:
    from . import ablation
    from .report import _ablation as ablation_report

    spec = ablation.load_ablation(args.experiment, args.set, args.seeds, args.workers, args.baseline)
    from .report._source import run_storage

    run_dir = Path(args.experiment)
    tuned = run_storage(run_dir) is not None  # a `dnntune tune` run folder: its report will show the ablation
    if args.out:
        out = Path(args.out)
    else:
        out = run_dir / "ablation" if tuned else Path("runs") / f"{Path(args.experiment).stem}-ablation"
    from .engine.runfolder import prepare_out_dir

    prepare_out_dir(out)
    bar = None
    if not (args.quiet or args.json):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("[bold]ablation runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=_console())
        task = bar.add_task("ablate", total=None)
        bar.start()
    try:
        result = ablation.ablate(spec, on_done=(lambda i, n: bar.update(task, completed=i, total=n)) if bar else None)
    finally:
        if bar is not None:
            bar.stop()
    paths = ablation_report.write(result, out)
    if tuned and out.resolve() == (run_dir / "ablation").resolve():
        from .report import ReportError, write_report

        try:  # the run's report shows the ablation from now on
            paths["report"] = write_report(run_dir).path
        except ReportError as e:
            _console().print(f"[yellow]the run's report was not refreshed: {e}[/yellow]")
    if args.json:
        print(paths["json"].read_text())
    elif not args.quiet:
        ablation_report.print_table(result, _console(stderr=False))
        _console(stderr=False).print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0


TRACKER_ARG = {"choices": ("jsonl", "tensorboard", "none"), "default": "jsonl",
               "help": "per-epoch tracking: jsonl (curves.jsonl, in every run folder anyway), tensorboard "
                       "(also TensorBoard event files per run/trial: `tensorboard --logdir RUN_DIR`), none"}


def cmd_report(args) -> int:
    from .report import ReportError, write_report
    from .report._build import SECTIONS

    if args.run_dir and args.storage:
        raise ReportError("report: give a RUN_DIR or --storage URL --study NAME, not both")
    if not args.run_dir and not args.storage:
        raise ReportError("report: give the RUN_DIR of `dnntune tune` or --storage URL --study NAME")
    if args.out:
        from .engine.runfolder import prepare_out_dir

        prepare_out_dir(args.out)
    progress = None
    if not args.quiet and not args.json:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("[bold]report[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=_console(), transient=True)
        task = progress.add_task("", total=len(SECTIONS))
        progress.start()

    def step(name: str) -> None:
        if progress is not None:
            progress.update(task, advance=1, description=name)

    try:
        report = write_report(args.run_dir, storage=args.storage, study=args.study, out=args.out, on_step=step)
    finally:
        if progress is not None:
            progress.stop()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif not args.quiet:
        con = _console(stderr=False)
        for name, why in report.missing.items():
            con.print(f"[dim]not shown: {name}: {why}[/dim]")
        con.print(f"report: {report.path} ({len(report.figures)} figures)")
    if report.problem:
        raise ReportError(f"{report.problem}; wrote a partial report with the failures: {report.path}")
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
    t.add_argument("--tracker", **TRACKER_ARG)
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("datasets", help="list datasets and their knobs")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_datasets)
    m = sub.add_parser("models", help="list model families and their knobs")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    tu = sub.add_parser("tune", help="search the best training recipe", description="Search the recipe space "
                        "with Optuna, stop bad trials early, retrain the best recipe and test it once.")
    tu.add_argument("experiment", nargs="?", help="experiment YAML (recipe sections with search dimensions)")
    tu.add_argument("--data", help="tune this dataset from the default search space")
    tu.add_argument("--storage", help="study storage: a journal file path or a database URL "
                    "(default: RUN_DIR/study.journal)")
    tu.add_argument("--study", help="study name (default: the experiment file's name, or NAME-default with "
                    "--data NAME)")
    tu.add_argument("--n-trials", type=int, dest="n_trials")
    tu.add_argument("--timeout", type=float, help="wall-clock budget in seconds")
    tu.add_argument("--epoch-budget", type=int, dest="epoch_budget", help="total epochs over all trials")
    tu.add_argument("--workers", type=int, help="parallel trial processes on this machine")
    tu.add_argument("--sampler", help="tpe, random, grid, gp, cmaes, nsga2")
    tu.add_argument("--pruner", help="none, median, asha, hyperband")
    tu.add_argument("--final", help="retrain (on train+val, default) or best_trial (keep its weights)")
    tu.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    tu.add_argument("--out", help="run folder (default runs/<study>)")
    tu.add_argument("--quiet", action="store_true")
    tu.add_argument("--json", action="store_true", help="print summary.json to stdout")
    tu.add_argument("--tracker", **TRACKER_ARG)
    tu.set_defaults(func=cmd_tune)

    w = sub.add_parser("worker", help="join a running study from another process or machine")
    w.add_argument("--storage", required=True, help="the study's storage (journal path or database URL)")
    w.add_argument("--study", required=True)
    w.add_argument("--out", help="folder for this worker's trial runs (default runs/<study>)")
    w.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    w.add_argument("--workers", type=int, default=1, help="workers on this machine (sets torch threads)")
    w.add_argument("--threads", type=int, help="torch threads per worker")
    w.add_argument("--quiet", action="store_true", help="no line per finished trial")
    w.set_defaults(func=cmd_worker)

    b = sub.add_parser("best", help="print the best recipe of a study as YAML")
    b.add_argument("--storage", required=True)
    b.add_argument("--study", required=True)
    b.add_argument("--out", help="write the recipe here instead of printing it")
    b.set_defaults(func=cmd_best)

    r = sub.add_parser("report", help="write the HTML report of a study", description="Write one self-contained "
                       "HTML page (figures embedded) and the PNG figures: RUN_DIR/report/index.html.")
    r.add_argument("run_dir", nargs="?", help="run folder of `dnntune tune`")
    r.add_argument("--storage", help="instead of RUN_DIR: the study storage (journal path or database URL)")
    r.add_argument("--study", help="study name (default: the run folder's study)")
    r.add_argument("--out", help="report folder (default RUN_DIR/report)")
    r.add_argument("--quiet", action="store_true", help="no progress, print nothing but errors")
    r.add_argument("--json", action="store_true", help="print what was written as JSON")
    r.set_defaults(func=cmd_report)

    lf = sub.add_parser("lr-find", help="learning-rate range test: loss vs lr, suggested lr",
                        description="One short run with the lr growing exponentially per step from --min-lr to "
                        "--max-lr on the training split; smoothed loss vs lr in DIR/lr_find.png and lr_find.json. "
                        "Suggested lr: the minimum of the smoothed loss / 10. Stops when the smoothed loss exceeds "
                        "4x its minimum. The recipe's lr and schedule are ignored; validation data is untouched.")
    lf.add_argument("recipe", help="recipe YAML file")
    lf.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    lf.add_argument("--out", help="output folder (default runs/<recipe name>-lr-find)")
    lf.add_argument("--min-lr", type=float, default=1e-7, dest="min_lr")
    lf.add_argument("--max-lr", type=float, default=10.0, dest="max_lr")
    lf.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    lf.add_argument("--quiet", action="store_true", help="print only the suggested lr")
    lf.add_argument("--json", action="store_true", help="print lr_find.json to stdout")
    lf.set_defaults(func=cmd_lr_find)

    ab = sub.add_parser("ablate", help="what each strategy bought: cumulative and leave-one-out views over seeds",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Train the rows of two views over several seeds: cumulative (from a baseline "
                        "recipe, switch one strategy at a time to the best recipe's setting) and leave-one-out "
                        "(from the best, revert one strategy at a time). Writes ablation.md/.csv/.png/.json.\n\n"
                        "EXPERIMENT is an ablation file:\n"
                        "  best: runs/digits/best/recipe.yaml  # recipe file, run folder or inline recipe\n"
                        "  baseline: digits-baseline.yaml      # default: the seed articles' MLP/Adam baseline\n"
                        "  seeds: 3                            # or a list; workers: 2; metric: accuracy\n"
                        "  strategies: [architecture, ...]     # order of the cumulative view\n"
                        "  set: [train.epochs=20]              # overrides for both recipes\n"
                        "or a recipe file or run folder (= best, with the default baseline).\n\n"
                        "Strategies: architecture, optimizer (+ lr, grad clip), schedule, batch_size, loss, "
                        "regularization (weight decay, L1, dropout), augmentation, training_length (epochs, early "
                        "stopping). Validation numbers are for choices; test numbers are the final evaluation.")
    ab.add_argument("experiment", help="ablation file, recipe file or run folder")
    ab.add_argument("--baseline", help="baseline recipe file or run folder (overrides the file's)")
    ab.add_argument("--seeds", type=int, help="number of seeds (default 3)")
    ab.add_argument("--workers", type=int, help="parallel training processes (default 2)")
    ab.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a field of both recipes (repeatable)")
    ab.add_argument("--out", help="output folder (default: RUN_DIR/ablation for a `dnntune tune` run folder, whose "
                    "report then shows the ablation; otherwise runs/<name>-ablation)")
    ab.add_argument("--quiet", action="store_true")
    ab.add_argument("--json", action="store_true", help="print ablation.json to stdout")
    ab.set_defaults(func=cmd_ablate)

    demo = sub.add_parser("demo", help="the main job on the embedded default: tune MNIST-1D for ~5 minutes")
    demo.add_argument("--out", default="runs/demo", help="run folder (replaced on every demo)")
    demo.add_argument("--timeout", type=float, help="search budget in seconds (default 300)")
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
        from .search.study import StudyFailed

        print(f"dnntune: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, StudyFailed) else EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("dnntune: interrupted; completed epochs and trials are saved: run the same command again to continue",
              file=sys.stderr)
        return 130
