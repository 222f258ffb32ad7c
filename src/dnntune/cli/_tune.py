"""``dnntune`` commands: search: tune, join a study as a worker, print the best recipe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from ._common import TRACKER_ARG, _console


def _experiment_from_args(args) -> tuple[dict, str]:
    from ..config import apply_overrides, read_yaml
    from ..plugins import load_plugins, used_plugins
    from ..search import complete_experiment

    if args.experiment:
        raw, source = read_yaml(args.experiment), args.experiment
        load_plugins(raw.get("plugins"), base_dir=Path(args.experiment).parent)
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
    plugins = [*(raw.pop("plugins", None) or []), *getattr(args, "plugins", [])]  # not part of the default space
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
    raw = complete_experiment(raw)
    plugins = list(dict.fromkeys([*plugins, *used_plugins(raw)]))  # stored with the study: workers import them
    return ({"plugins": plugins, **raw} if plugins else raw), source


def cmd_tune(args) -> int:
    from ..config import SearchSection
    from ..search import tune

    experiment, source = _experiment_from_args(args)
    try:
        SearchSection(**experiment["search"])
    except Exception as e:  # pydantic ValidationError → field message
        from pydantic import ValidationError

        from ..config import _format_validation

        if isinstance(e, ValidationError):
            raise UserError(_format_validation("search", e)) from None
        raise
    name = args.study or (Path(args.experiment).stem if args.experiment else f"{args.data}-default")
    from ..engine.runfolder import prepare_out_dir

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
    shown = [k for k in ("accuracy", "balanced_accuracy", "average_precision", "f1_micro", "f1_macro",
                         "subset_accuracy", "mse", "mae", "r2") if k in summary["test"]]
    for k in shown:
        table.add_column(k, justify="right")
    table.add_row("test", *[f"{summary['test'][k]:.4f}" for k in shown])
    con.print(table)
    con.print(f"study: {summary['storage']} (name {summary['study']}); best model: {out / 'best'}")
    if summary.get("report"):
        con.print(f"report: {summary['report']}")


def cmd_worker(args) -> int:
    from ..engine.runfolder import prepare_out_dir
    from ..search import worker_main

    out = prepare_out_dir(Path(args.out) if args.out else Path("runs") / args.study)
    worker_main(args.storage, args.study, out, args.index, args.workers, args.threads, quiet=args.quiet)
    return 0


def cmd_best(args) -> int:
    import optuna

    from ..config import validate_recipe
    from ..search.selection import best_trial, trial_value
    from ..search.storage import open_storage
    from ..search.study import Objectives, load_study, stored_search

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(args.storage)
    study = load_study(storage, args.study)
    experiment, _ = stored_search(study)  # a clear error for a study dnntune did not create
    from ..search.worker import import_plugins

    import_plugins(experiment, study)
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


def add_commands(sub) -> None:
    """Register this module's commands on the top-level subparsers."""
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
