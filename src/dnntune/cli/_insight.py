"""``dnntune`` commands: insight: the HTML report of a study and the ablation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import _console


def cmd_report(args) -> int:
    from ..report import ReportError, write_report
    from ..report._build import SECTIONS

    if args.run_dir and args.storage:
        raise ReportError("report: give a RUN_DIR or --storage URL --study NAME, not both")
    if not args.run_dir and not args.storage:
        raise ReportError("report: give the RUN_DIR of `dnntune tune` or --storage URL --study NAME")
    if args.out:
        from ..engine.runfolder import prepare_out_dir

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


def cmd_ablate(args) -> int:
    from .. import ablation
    from ..report import _ablation as ablation_report

    spec = ablation.load_ablation(args.experiment, args.set, args.seeds, args.workers, args.baseline)
    from ..report._source import run_storage

    run_dir = Path(args.experiment)
    tuned = run_storage(run_dir) is not None  # a `dnntune tune` run folder: its report will show the ablation
    if args.out:
        out = Path(args.out)
    else:
        out = run_dir / "ablation" if tuned else Path("runs") / f"{Path(args.experiment).stem}-ablation"
    from ..engine.runfolder import prepare_out_dir

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
        from ..report import ReportError, write_report

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


def add_commands(sub) -> None:
    """Register this module's commands on the top-level subparsers."""
    r = sub.add_parser("report", help="write the HTML report of a study", description="Write one self-contained "
                       "HTML page (figures embedded) and the PNG figures: RUN_DIR/report/index.html.")
    r.add_argument("run_dir", nargs="?", help="run folder of `dnntune tune`")
    r.add_argument("--storage", help="instead of RUN_DIR: the study storage (journal path or database URL)")
    r.add_argument("--study", help="study name (default: the run folder's study)")
    r.add_argument("--out", help="report folder (default RUN_DIR/report)")
    r.add_argument("--quiet", action="store_true", help="no progress, print nothing but errors")
    r.add_argument("--json", action="store_true", help="print what was written as JSON")
    r.set_defaults(func=cmd_report)
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
