"""One trial: Optuna's suggestions → a recipe → the one training path (per fold) → the trial's value.

Pruning and the time budget hang on the trainer as a callback (:class:`TrialReporter`)."""

from __future__ import annotations

import json
import time

import optuna

from ..config import Recipe, SearchSection, validate_recipe
from ..data import Data, load_data
from ..engine.callbacks import Callback
from ..engine.trainer import Trainer
from ..errors import TrainingDiverged
from ..report.tracking import fit_tracked
from . import storage as st
from .interrupt import INTERRUPTED, check_ctrl_c, ctrl_c_pending
from .space import suggest_recipe
from .study import FAIL_REASON, OBJECTIVE_EXTRAS, Objectives


class DataCache:
    """Prepared datasets per (data section, seed, fold): trials of one worker share them."""

    def __init__(self):
        self._cache: dict[str, Data] = {}

    def get(self, recipe: Recipe, fold: tuple[int, int] | None = None) -> Data:
        key = json.dumps({"data": recipe.to_dict()["data"], "seed": recipe.seed, "fold": fold}, sort_keys=True)
        if key not in self._cache:
            self._cache[key] = load_data(recipe.data, recipe.seed, fold)
        return self._cache[key]


def fold_of(folds: int, i: int) -> tuple[int, int] | None:
    """The ``fold`` argument of ``load_data`` for fold ``i`` of a study with ``search.folds: folds``."""
    return None if folds <= 1 else (i, folds)


def mean_metrics(runs: list[dict]) -> dict:
    """Per-metric mean of the folds' validation metrics (numbers only; no confusion matrix)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: sum(r[k] for r in runs) / len(runs) for k in keys if all(k in r for r in runs)}


class TrialReporter(Callback):
    """Per epoch: check for Ctrl-C, show progress, report the validation value to Optuna (first fold
    only: the folds of a trial run one after another) and stop the fit when the pruner or the deadline
    says so."""

    def __init__(self, trial: optuna.Trial, objectives: Objectives, deadline: float | None, on_epoch=None):
        self.trial, self.objectives, self.deadline, self.on_epoch = trial, objectives, deadline, on_epoch
        self.fold = 0
        self.pruned_at: int | None = None
        self.timed_out = False

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> bool:
        check_ctrl_c()
        if self.on_epoch is not None:
            self.on_epoch(self.trial.number, row["epoch"], row)
        value = row.get(f"val_{self.objectives.names[0]}")
        if value is None:
            return False
        if self.fold == 0 and not self.objectives.multi:
            self.trial.report(float(value), row["epoch"])
            if self.trial.should_prune():
                self.pruned_at = row["epoch"]
                return True
        if self.deadline is not None and time.time() >= self.deadline:
            self.timed_out = True
            return True
        return False


def _record(trial: optuna.Trial, results: list, folds: int, metric: str, trial_dir) -> dict:
    """The trial's user attributes; returns its validation metrics (the mean over folds)."""
    vals = [{k: v for k, v in r.metrics.get("val", {}).items() if k not in ("confusion_matrix", "per_label")}
            for r in results]
    val = vals[0] if folds == 1 else mean_metrics(vals)
    best_epochs = [r.best_epoch for r in results if r.best_epoch is not None]
    trial.set_user_attr("epochs", sum(r.epochs for r in results))
    trial.set_user_attr("best_epoch", round(sum(best_epochs) / len(best_epochs)) if best_epochs else None)
    trial.set_user_attr("params", results[0].params)
    trial.set_user_attr("wall_seconds", round(sum(r.wall_seconds for r in results), 3))
    trial.set_user_attr("val", val)
    if folds > 1:
        trial.set_user_attr("folds", [v.get(metric) for v in vals])
    trial.set_user_attr("dir", str(trial_dir))
    return val


def _fail_reason(e: Exception) -> str:
    if isinstance(e, TrainingDiverged):
        return f"diverged (NaN/inf loss) at epoch {e.epoch}"
    name = type(e).__name__
    if "OutOfMemory" in name or "out of memory" in str(e):
        return f"out of memory: {str(e)[:200]}"
    return f"{name}: {str(e)[:300]}"


def objective_factory(experiment: dict, search: SearchSection, objectives: Objectives, cfg, data_cache: DataCache,
                      on_epoch=None):
    """Optuna's objective for a study of ``experiment`` run by the worker configured by ``cfg``."""
    metric = objectives.names[0]

    def run(trial: optuna.Trial):
        recipe = validate_recipe(suggest_recipe(trial, experiment), "trial")
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"metric": metric})})
        # the recipe as a user trains it (`dnntune best`, the final model: all cores, checkpoints) ...
        trial.set_user_attr("recipe", recipe.to_dict())
        # ... and as the trial runs it: re-run rather than resumed (no checkpoint), the worker's thread count
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(
            update={"checkpoint": False, "threads": cfg.threads or recipe.train.threads})})
        reporter = TrialReporter(trial, objectives, cfg.deadline, on_epoch)
        trial_dir = cfg.out_dir / "trials" / f"{trial.number:04d}"
        results = []
        for i in range(search.folds):
            reporter.fold = i
            trainer = Trainer(recipe, data_cache.get(recipe, fold_of(search.folds, i)),
                              out_dir=trial_dir if i == 0 else trial_dir / f"fold{i}", evaluate_test=False,
                              callbacks=[reporter])
            results.append(fit_tracked(trainer, cfg.tracker))
            if reporter.pruned_at is not None or reporter.timed_out:
                break
        val = _record(trial, results, search.folds, metric, trial_dir)
        if reporter.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at epoch {reporter.pruned_at}")
        if reporter.timed_out:
            # a trial cut by the time budget still reports its best validation value: its recipe is
            # retrained for its best epoch count, so the study always yields a final model
            trial.set_user_attr("stopped", "time budget")
        extras = {"params": results[0].params, "wall_seconds": sum(r.wall_seconds for r in results),
                  "epochs": sum(r.epochs for r in results) / len(results)}
        values = [float(extras[name] if name in OBJECTIVE_EXTRAS else val[name]) for name in objectives.names]
        return values if objectives.multi else values[0]

    def objective(trial: optuna.Trial):
        trial.storage.set_trial_system_attr(trial._trial_id, st.OWNER_KEY, st.owner())
        try:
            return run(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_REASON, INTERRUPTED)
            raise
        except Exception as e:
            if ctrl_c_pending():  # e.g. the storage's file lock, broken by the KeyboardInterrupt mid-write
                trial.set_user_attr(FAIL_REASON, INTERRUPTED)
                raise KeyboardInterrupt from e
            trial.set_user_attr(FAIL_REASON, _fail_reason(e))
            raise

    return objective
