"""Experiment tracking: per-epoch scalars of a run, as a trainer callback.

Every run folder already holds ``curves.jsonl`` (written by the Trainer, one line per epoch), so
``jsonl`` and ``none`` add nothing; ``tensorboard`` also writes TensorBoard event files into the
run (or trial) folder, so ``tensorboard --logdir RUN_DIR`` compares all trials of a study.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..engine.callbacks import Callback
from ..errors import ConfigError

TRACKERS = ("jsonl", "tensorboard", "none")

# curves.jsonl key → TensorBoard tag
_TAGS = {"train_loss": "train/loss", "val_loss": "val/loss", "lr": "optim/lr", "batch_size": "optim/batch_size",
         "seconds": "time/epoch_seconds"}


def check_tracker(name: str) -> str:
    if name not in TRACKERS:
        raise ConfigError(f"--tracker: unknown tracker {name!r}; allowed: {', '.join(TRACKERS)}")
    return name


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested mapping → ``{"optim.lr": 0.01, ...}`` with values TensorBoard's hparams accept."""
    out: dict = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        elif v is None:
            out[key] = "none"
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


class TensorBoardTracker(Callback):
    """A trainer callback: each epoch's row as scalars and, at the end of the fit, an hparams summary
    (recipe → final metrics); the event file is closed even when the fit fails.

    Example:
        >>> from dnntune.config import validate_recipe
        >>> from dnntune.engine.trainer import Trainer
        >>> import tempfile
        >>> r = validate_recipe({"data": {"name": "iris"}, "model": {"family": "linear"}, "train": {"epochs": 2}})
        >>> out = tempfile.mkdtemp()
        >>> result = fit_tracked(Trainer(r, out_dir=out), "tensorboard")
    """

    def __init__(self, log_dir: Path, recipe_dict: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.recipe_dict = recipe_dict

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> bool:
        for key, value in row.items():
            if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            tag = _TAGS.get(key) or (f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}")
            self.writer.add_scalar(tag, float(value), row["epoch"])
        return False

    def on_fit_end(self, trainer, result) -> None:
        """Write the hparams summary (when the run produced metrics) and flush the event file."""
        try:
            if result is not None:
                self._hparams(result)
        finally:
            self.writer.close()

    def _hparams(self, result) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = {}
        for split, values in result.metrics.items():
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    metrics[f"final/{split}_{k}"] = float(v)
        metrics["final/epochs"] = float(result.epochs)
        hp = flatten({k: v for k, v in self.recipe_dict.items() if k != "search"})
        exp, ssi, sei = hparams(hp, metrics)
        fw = self.writer.file_writer
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)
        for k, v in metrics.items():
            self.writer.add_scalar(k, v)


def make_tracker(name: str, trainer) -> TensorBoardTracker | None:
    """Attach the tracker ``name`` to ``trainer`` as a callback; None when it needs none (``jsonl``: the
    trainer's own curves.jsonl; ``none``)."""
    check_tracker(name)
    if name != "tensorboard" or trainer.out_dir is None:
        return None
    tracker = TensorBoardTracker(trainer.out_dir, trainer.recipe.to_dict())
    trainer.add_callback(tracker)
    return tracker


def fit_tracked(trainer, tracker: str | None = "jsonl"):
    """``trainer.fit()`` with the tracker ``tracker`` attached."""
    make_tracker(tracker or "jsonl", trainer)
    return trainer.fit()
