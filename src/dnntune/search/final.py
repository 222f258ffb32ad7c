"""The final model of a study: the best recipe retrained on train+val (or the best trial's own weights),
evaluated once on the test split, in ``RUN_DIR/best/``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import torch

from ..config import SearchSection, validate_recipe
from ..data import Data, Split, load_data
from ..engine import checkpoint as ckpt
from ..engine.result import RunResult, run_files
from ..engine.trainer import Trainer
from ..report.tracking import fit_tracked
from .objective import fold_of
from .selection import best_trial, trial_value
from .study import Objectives, counts


def merge_train_val(data: Data) -> Data:
    """Train on train + val (for the final retrain); normalization statistics stay from train."""
    train = Split(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]))
    empty = Split(data.val.x[:0], data.val.y[:0])
    return dataclasses.replace(data, train=train, val=empty)


def improvements(trial) -> list[bool]:
    """Per epoch, did the trial's validation metric improve (its first fold's curves)? Replayed by the
    retrain on train+val, which has no validation split, for plateau schedules and batch growth."""
    if not trial.user_attrs.get("dir"):
        return []
    path = Path(trial.user_attrs["dir"]) / "curves.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []
    return [bool(row.get("improved")) for row in rows]


def trial_thresholds(trial) -> tuple[list[float], str] | None:
    """Multi-label: the decision thresholds the trial chose on its validation split (its run folder's
    preprocess.json), for the retrain on train+val, which has no validation split to choose them on."""
    if not trial.user_attrs.get("dir"):
        return None
    try:
        values = json.loads((Path(trial.user_attrs["dir"]) / "preprocess.json").read_text()).get("thresholds")
    except (OSError, ValueError):
        return None
    return None if values is None else (values, f"trial {trial.number}'s validation split")


def _retrain(best, recipe, data: Data, best_dir: Path, tracker: str) -> dict:
    epochs = int(best.user_attrs.get("best_epoch") or best.user_attrs.get("epochs") or recipe.train.epochs)
    train_section = recipe.train.model_copy(update={
        "epochs": max(epochs, 1), "early_stopping": recipe.train.early_stopping.model_copy(
            update={"patience": None}), "checkpoint": True})
    recipe = recipe.model_copy(update={"train": train_section})
    result = fit_tracked(Trainer(recipe, merge_train_val(data), out_dir=best_dir, resume=False,
                                 replay=improvements(best), thresholds=trial_thresholds(best)), tracker)
    return result.metrics["test"]


def _keep_trial_weights(best, recipe, data: Data, best_dir: Path) -> dict:
    trainer = Trainer(recipe, data)
    trainer.setup()
    ckpt.load_weights(Path(best.user_attrs["dir"]) / "model.safetensors", trainer.model)
    trainer.fit_thresholds()  # multi-label: on the trial's own validation split, as the trial chose them
    test = trainer.evaluate(data.test, confusion=True)
    result = RunResult(recipe=recipe, metrics={"test": test}, history=[], epochs=int(best.user_attrs.get("epochs", 0)),
                       best_epoch=best.user_attrs.get("best_epoch"), stopped="best_trial", wall_seconds=0.0,
                       params=int(best.user_attrs.get("params", 0)), model=trainer.model, out_dir=best_dir)
    ckpt.write_run_files(best_dir, run_files(result, trainer, trial=best.number, mode="best_trial"))
    return test


def final_model(study: optuna.Study, objectives: Objectives, search: SearchSection, out_dir: Path,
                tracker: str = "jsonl"):
    """Retrain the best recipe on train+val (``search.final: retrain``) or keep the best trial's weights
    (``best_trial``), test it once. Returns (best trial, recipe, test metrics), or None without a best trial."""
    best = best_trial(study, objectives.directions)
    if best is None:
        return None
    recipe = validate_recipe(best.user_attrs["recipe"], f"trial {best.number}")
    # retrain: on all non-test data (train + val); best_trial: the trial's own (first-fold) weights and
    # normalization; either way the same test split
    data = load_data(recipe.data, recipe.seed, None if search.final == "retrain" else fold_of(search.folds, 0))
    if search.final == "retrain":
        test = _retrain(best, recipe, data, out_dir / "best", tracker)
    else:
        test = _keep_trial_weights(best, recipe, data, out_dir / "best")
    return best, recipe, test


def study_summary(study: optuna.Study, objectives: Objectives, final, wall: float, storage_desc: str) -> dict:
    best = final[0] if final else best_trial(study, objectives.directions)
    c = counts(study)
    summary = {
        "study": study.study_name, "storage": storage_desc,
        "objectives": dict(zip(objectives.names, objectives.directions)),
        "best": None if best is None else {
            "value": trial_value(best, objectives.directions[0]), "values": best.values, "trial": best.number,
            "state": best.state.name.lower(), "params": best.params},
        "trials": {k: c[k] for k in ("complete", "pruned", "fail")},
        "test": None if not final else final[2],
        "wall_seconds": round(wall, 2),
    }
    if objectives.multi:
        summary["pareto_front"] = [{"trial": t.number, "values": t.values} for t in study.best_trials]
    return summary
