"""What the commands share: consoles, the epoch progress callback, result tables, argument presets."""

from __future__ import annotations

from pathlib import Path


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
    shown = ("accuracy", "balanced_accuracy", "average_precision", "f1_micro", "f1_macro", "subset_accuracy", "loss",
             "mse", "mae", "r2")
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


TRACKER_ARG = {"choices": ("jsonl", "tensorboard", "none"), "default": "jsonl",
               "help": "per-epoch tracking: jsonl (curves.jsonl, in every run folder anyway), tensorboard "
                       "(also TensorBoard event files per run/trial: `tensorboard --logdir RUN_DIR`), none"}
