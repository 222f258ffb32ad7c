"""What a run produced (:class:`RunResult`) and the files of its run folder (:func:`run_files`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..config import Recipe
from .checkpoint import weights_bytes
from .runtime import environment
from .transfer import table_file


@dataclass
class RunResult:
    """What one training run produced."""

    recipe: Recipe
    metrics: dict[str, dict]
    history: list[dict]
    epochs: int
    best_epoch: int | None
    stopped: str
    wall_seconds: float
    params: int
    model: nn.Module = field(repr=False)
    out_dir: Path | None = None

    def summary(self) -> dict:
        return {"metrics": self.metrics, "epochs": self.epochs, "best_epoch": self.best_epoch,
                "stopped": self.stopped, "wall_seconds": round(self.wall_seconds, 3), "params": self.params}


def run_files(result: RunResult, trainer, **summary_extra) -> dict[str, bytes | str]:
    """What a run folder holds besides its checkpoint and curves.jsonl: weights, recipe, summary, curves
    table and the preprocessing that makes the model usable without the training data."""
    from ..data.preprocess import Preprocessing

    summary = result.summary()
    summary.update({"metric": trainer.metric, "direction": trainer.direction, "data": trainer.data.describe(),
                    "env": environment(trainer.device), **summary_extra})
    thresholds = getattr(trainer, "thresholds", None)  # multi-label: chosen on validation (Trainer.fit_thresholds)
    if thresholds is not None:
        summary["thresholds"] = {"values": thresholds, "from": trainer.thresholds_from}
    if trainer.data.class_names is not None:  # the confusion matrices' axes, by name
        summary["class_names"] = [str(n) for n in trainer.data.class_names]
    from ..plugins import model_plugin

    plugin = model_plugin(result.recipe.model.family)
    if plugin is not None:  # which plugin built the model: load_run imports it again
        summary["model_plugin"] = plugin
    files = {"model.safetensors": weights_bytes(result.model), "recipe.yaml": result.recipe.to_yaml(),
             **Preprocessing.from_data(trainer.data, thresholds).to_files(), **table_file(trainer)}
    if result.history:
        keys = list(dict.fromkeys(k for h in result.history for k in h))
        lines = [",".join(keys)] + [",".join("" if h.get(k) is None else repr(h.get(k)) for k in keys)
                                    for h in result.history]
        files["curves.csv"] = "\n".join(lines) + "\n"
    files["summary.json"] = json.dumps(summary, indent=2) + "\n"  # last: a run folder with a summary is whole
    return files
