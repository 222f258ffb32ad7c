"""``dnntune`` commands: train one recipe, list the registries, the learning-rate range test."""

from __future__ import annotations

import json
from pathlib import Path

from ._common import TRACKER_ARG, EpochProgress, _console, _print_metrics


def cmd_train(args) -> int:
    from ..config import load_recipe
    from ..engine.trainer import Trainer

    recipe = load_recipe(args.recipe, args.set, args.seed)
    from ..engine.runfolder import prepare_out_dir

    out = prepare_out_dir(Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem)
    trainer = Trainer(recipe, out_dir=out, resume=not args.fresh)
    if not args.quiet and not args.json:
        trainer.add_callback(EpochProgress(recipe.train.epochs))
    from ..report.tracking import fit_tracked

    fit_tracked(trainer, args.tracker)
    summary = json.loads((out / "summary.json").read_text())
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_metrics(summary, out, args.quiet)
    return 0


def cmd_datasets(args) -> int:
    from ..data import DATASETS

    return _list_registry(DATASETS, args, extra=lambda e: f"{e.meta.get('kind', '')}, {e.meta.get('task', '')}"
                          + (f"; plugin {e.meta['plugin']}" if e.meta.get("plugin") else ""))


def cmd_models(args) -> int:
    from ..models import MODELS
    from ..plugins import describe_entry_points

    def info(e) -> str:
        kinds = ", ".join(e.meta.get("kinds") or ())
        return kinds + (f"; plugin {e.meta['plugin']}" if e.meta.get("plugin") else "")

    eps = [ep for ep in describe_entry_points() if not ep["loaded"]]
    code = _list_registry(MODELS, args, extra=info, entry_points=eps)
    return code


def _list_registry(registry, args, extra=None, entry_points=None) -> int:
    rows = []
    for e in registry:
        rows.append({"name": e.name, "doc": e.doc, "info": extra(e) if extra else "",
                     "knobs": [{"name": n, "type": t, "default": d} for n, t, d in e.knob_table()]})
    if args.json:
        rows += [{"name": ep["name"], "doc": "installed plugin, not loaded (--plugin NAME)", "info": ep["value"],
                  "entry_point": ep["value"], "loaded": False, "knobs": []} for ep in entry_points or []]
        print(json.dumps(rows, indent=2))
        return 0
    con = _console(stderr=False)
    for r in rows:
        con.print(f"[bold]{r['name']}[/bold]  {r['doc']}" + (f"  [dim]({r['info']})[/dim]" if r["info"] else ""))
        for k in r["knobs"]:
            con.print(f"    {k['name']:<20} {k['type']:<28} default {k['default']}")
    if entry_points:  # discovered, never imported unless named (a plugin is code: it runs only when asked for)
        con.print("\n[bold]installed plugins, not loaded[/bold] (load with --plugin NAME or plugins: [NAME])")
        for ep in entry_points:
            con.print(f"    {ep['name']:<20} {ep['value']:<28} {ep['distribution']}")
    return 0


def cmd_lr_find(args) -> int:
    from ..config import load_recipe
    from ..engine.lr_find import lr_find

    recipe = load_recipe(args.recipe, args.set)
    from ..engine.runfolder import prepare_out_dir

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


def add_commands(sub) -> None:
    """Register this module's commands on the top-level subparsers."""
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
