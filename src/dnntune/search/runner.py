"""The study runner: Optuna calls the one training path (``Trainer.fit``) once per trial.

A *worker* runs trials of one study until its budget is used; ``tune`` creates or continues the
study, runs one worker in-process or K worker processes, shows a live view, then retrains the best
recipe and evaluates it once on the test split.
"""

from __future__ import annotations

import collections
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..config import Recipe, validate_recipe
from ..data import Data, load_data
from ..engine import checkpoint as ckpt
from ..engine.metrics import default_metric, direction, tie_loss
from ..engine.trainer import Trainer
from ..errors import ConfigError, TrainingDiverged, UserError
from ..report.tracking import fit_tracked
from . import storage as st
from .space import grid_space, suggest_recipe

EXPERIMENT_KEY = "dnntune:experiment"
DEADLINE_KEY = "dnntune:deadline"
STOP_KEY = "dnntune:stop_reason"
REQUEUED_KEY = "dnntune:requeued"
TRACKER_KEY = "dnntune:tracker"
FAIL_REASON = "fail_reason"
INTERRUPTED = "interrupted (Ctrl-C)"
OBJECTIVE_EXTRAS = {"params": "minimize", "wall_seconds": "minimize", "epochs": "minimize"}


class StudyFailed(UserError):
    """The study stopped after too many consecutive failed trials."""


@dataclass
class Objectives:
    """What a study optimizes: names (first = the validation metric) and directions."""

    names: list[str]
    directions: list[str]

    @classmethod
    def from_experiment(cls, experiment: dict, task: str) -> Objectives:
        search = experiment.get("search") or {}
        metric = search.get("metric") or (experiment.get("train") or {}).get("metric") or default_metric(task)
        if isinstance(metric, dict):
            raise ConfigError("search.metric: must be a metric name, not a search dimension")
        dirn = search.get("direction") or direction(metric, task)
        names, dirs = [metric], [dirn]
        for extra in search.get("objectives") or []:
            if extra == metric:
                continue
            if extra in OBJECTIVE_EXTRAS:
                names.append(extra)
                dirs.append(OBJECTIVE_EXTRAS[extra])
            else:
                names.append(extra)
                dirs.append(direction(extra, task))
        return cls(names, dirs)

    @property
    def multi(self) -> bool:
        return len(self.names) > 1


# --- samplers and pruners -------------------------------------------------------------------------


def max_epochs(experiment: dict) -> int:
    e = (experiment.get("train") or {}).get("epochs", 20)
    if isinstance(e, dict):
        e = max(e.get("int") or e.get("float") or e.get("choice"))
    return int(e)


MAX_GRID = 100_000


def make_sampler(name: str, experiment: dict, seed: int | None, workers: int, n_trials: int | None):
    """Optuna sampler for ``search.sampler``; TPE is multivariate, grouped for conditional spaces,
    and uses the constant liar when trials run in parallel."""
    s = optuna.samplers
    if name == "tpe":
        startup = 10 if n_trials is None else max(4, min(10, n_trials // 4))
        return s.TPESampler(multivariate=True, group=True, constant_liar=workers > 1, seed=seed,
                            n_startup_trials=startup)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "grid":
        space = grid_space(experiment)
        size = math.prod(len(v) for v in space.values())
        if size > MAX_GRID:  # Optuna materializes every point: a large grid exhausts memory
            widest = sorted(space, key=lambda k: -len(space[k]))[:3]
            raise ConfigError(f"search.sampler: grid over this space has {size:.3g} points (more than {MAX_GRID:,}; "
                              f"widest: {', '.join(f'{k} ({len(space[k])})' for k in widest)}); fix some values, set "
                              f"`grid: N` on numeric dimensions, or use tpe/random")
        return s.GridSampler(space, seed=seed)
    if name == "gp":
        return s.GPSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":
        return s.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return s.NSGAIISampler(seed=seed)
    raise ConfigError(f"search.sampler: unknown sampler {name!r}; allowed: tpe, random, grid, gp, cmaes, nsga2")


def make_pruner(name: str, epochs: int):
    """Optuna pruner for ``search.pruner``, working on the per-epoch validation metric."""
    p = optuna.pruners
    if name == "none":
        return p.NopPruner()
    if name == "median":
        return p.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 10))
    if name == "asha":
        # rungs at min_resource × 3^k epochs: ~4 rungs over the full length
        return p.SuccessiveHalvingPruner(min_resource=max(1, round(epochs / 27)), reduction_factor=3)
    if name == "hyperband":
        return p.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    raise ConfigError(f"search.pruner: unknown pruner {name!r}; allowed: none, median, asha, hyperband")


# --- study bookkeeping ----------------------------------------------------------------------------


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Does this trial use budget? Not a trial whose worker died or was interrupted (it is re-run)."""
    if trial.state == TrialState.FAIL:
        return FAIL_REASON in trial.user_attrs and trial.user_attrs[FAIL_REASON] != INTERRUPTED
    return True


def counts(study: optuna.Study) -> dict[str, int]:
    c = collections.Counter(t.state for t in study.get_trials(deepcopy=False))
    return {"complete": c[TrialState.COMPLETE], "pruned": c[TrialState.PRUNED], "fail": c[TrialState.FAIL],
            "running": c[TrialState.RUNNING], "waiting": c[TrialState.WAITING]}


def budget_left(study: optuna.Study, n_trials: int | None, epoch_budget: int | None,
                deadline: float | None) -> bool:
    if deadline is not None and time.time() >= deadline:
        return False
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True  # re-runs of trials whose worker died: part of the budget already
    if n_trials is not None and sum(counted(t) for t in trials) >= n_trials:
        return False
    if epoch_budget is not None and sum(int(t.user_attrs.get("epochs", 0)) for t in trials) >= epoch_budget:
        return False
    return True


def consecutive_failures(study: optuna.Study) -> list[str]:
    """Reasons of the trailing run of failed trials (in order of completion)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and counted(t)]
    done.sort(key=lambda t: t.datetime_complete or t.datetime_start)
    reasons: list[str] = []
    for t in reversed(done):
        if t.state != TrialState.FAIL:
            break
        reasons.append(t.user_attrs.get(FAIL_REASON, "unknown"))
    return reasons


def common_reason(reasons: list[str]) -> str:
    (reason, n), = collections.Counter(reasons).most_common(1)
    return f"{reason}" + (f" ({n} of {len(reasons)})" if n < len(reasons) else "")


# --- one worker -----------------------------------------------------------------------------------

_CTRL_C = threading.Event()


def _on_sigint(signum, frame):
    _CTRL_C.set()
    raise KeyboardInterrupt


def catch_ctrl_c() -> None:
    """Remember a Ctrl-C, not only raise it: Python loses a KeyboardInterrupt that lands in a finalizer
    ("Exception ignored in ..."), and the study would then run on. Trials check the flag every epoch and
    the worker after each trial. A process started with SIGINT ignored (a background job) keeps ignoring it."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def check_ctrl_c() -> None:
    if _CTRL_C.is_set():
        raise KeyboardInterrupt


class _DataCache:
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


def _mean_metrics(runs: list[dict]) -> dict:
    """Per-metric mean of the folds' validation metrics (numbers only; no confusion matrix)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: sum(r[k] for r in runs) / len(runs) for k in keys if all(k in r for r in runs)}


@dataclass
class WorkerConfig:
    storage_url: str | None
    study_name: str
    out_dir: Path
    index: int = 0
    workers: int = 1
    n_trials: int | None = None
    epoch_budget: int | None = None
    deadline: float | None = None
    threads: int | None = None
    tracker: str | None = None  # None: the study's (set by `tune`), else jsonl


def objective_factory(experiment: dict, objectives: Objectives, cfg: WorkerConfig, data_cache: _DataCache,
                      on_epoch=None):
    metric = objectives.names[0]
    folds = int((experiment.get("search") or {}).get("folds") or 1)

    def objective(trial: optuna.Trial):
        trial.storage.set_trial_system_attr(trial._trial_id, st.OWNER_KEY, st.owner())
        try:
            recipe = validate_recipe(suggest_recipe(trial, experiment), "trial")
            recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"metric": metric})})
            # the recipe as a user trains it (`dnntune best`, the final model: all cores, checkpoints) ...
            trial.set_user_attr("recipe", recipe.to_dict())
            # ... and as the trial runs it: re-run rather than resumed (no checkpoint), the worker's thread count
            recipe = recipe.model_copy(update={"train": recipe.train.model_copy(
                update={"checkpoint": False, "threads": cfg.threads or recipe.train.threads})})
            state = {"pruned_at": None, "timeout": False, "fold": 0}

            def report(epoch: int, row: dict) -> bool:
                check_ctrl_c()
                if on_epoch is not None:
                    on_epoch(trial.number, epoch, row)
                value = row.get(f"val_{metric}")
                if value is None:
                    return False
                # pruning sees the first fold's curve (the folds of one trial run one after another)
                if state["fold"] == 0 and not objectives.multi:
                    trial.report(float(value), epoch)
                    if trial.should_prune():
                        state["pruned_at"] = epoch
                        return True
                if cfg.deadline is not None and time.time() >= cfg.deadline:
                    state["timeout"] = True
                    return True
                return False

            trial_dir = cfg.out_dir / "trials" / f"{trial.number:04d}"
            results = []
            for i in range(folds):
                state["fold"] = i
                data = data_cache.get(recipe, fold_of(folds, i))
                fold_dir = trial_dir if i == 0 else trial_dir / f"fold{i}"
                results.append(fit_tracked(Trainer(recipe, data, out_dir=fold_dir, on_epoch_end=report,
                                                   evaluate_test=False), cfg.tracker))
                if state["pruned_at"] is not None or state["timeout"]:
                    break
            result = results[0]
            vals = [{k: v for k, v in r.metrics.get("val", {}).items() if k != "confusion_matrix"} for r in results]
            val = vals[0] if folds == 1 else _mean_metrics(vals)
            best_epochs = [r.best_epoch for r in results if r.best_epoch is not None]
            wall = sum(r.wall_seconds for r in results)
            trial.set_user_attr("epochs", sum(r.epochs for r in results))
            trial.set_user_attr("best_epoch", round(sum(best_epochs) / len(best_epochs)) if best_epochs else None)
            trial.set_user_attr("params", result.params)
            trial.set_user_attr("wall_seconds", round(wall, 3))
            trial.set_user_attr("val", val)
            if folds > 1:
                trial.set_user_attr("folds", [v.get(metric) for v in vals])
            trial.set_user_attr("dir", str(trial_dir))
            if state["pruned_at"] is not None:
                raise optuna.TrialPruned(f"pruned at epoch {state['pruned_at']}")
            if state["timeout"]:
                # a trial cut by the time budget still reports its best validation value: its recipe is
                # retrained for its best epoch count, so the study always yields a final model
                trial.set_user_attr("stopped", "time budget")
            extras = {"params": result.params, "wall_seconds": wall,
                      "epochs": sum(r.epochs for r in results) / len(results)}
            values = [float(extras[name] if name in OBJECTIVE_EXTRAS else val[name]) for name in objectives.names]
            return values if objectives.multi else values[0]
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_REASON, INTERRUPTED)
            raise
        except TrainingDiverged as e:
            trial.set_user_attr(FAIL_REASON, f"diverged (NaN/inf loss) at epoch {e.epoch}")
            raise
        except Exception as e:
            if _CTRL_C.is_set():  # e.g. the storage's file lock, broken by the KeyboardInterrupt mid-write
                trial.set_user_attr(FAIL_REASON, INTERRUPTED)
                raise KeyboardInterrupt from e
            name = type(e).__name__
            if "OutOfMemory" in name or "out of memory" in str(e):
                reason = f"out of memory: {str(e)[:200]}"
            else:
                reason = f"{name}: {str(e)[:300]}"
            trial.set_user_attr(FAIL_REASON, reason)
            raise

    return objective


def load_study(storage, study_name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=storage, sampler=None)
    except KeyError:
        names = st.study_names(storage)
        raise ConfigError(f"--study: no study named {study_name!r} in {st.describe(storage)}; "
                          f"studies there: {', '.join(names) or '(none)'}") from None


def run_worker(cfg: WorkerConfig, storage=None, on_trial=None, on_epoch=None) -> None:
    """Run trials of an existing study until the budget is used (or the study is stopped)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = storage or st.open_storage(cfg.storage_url, cfg.out_dir)
    study = load_study(storage, cfg.study_name)
    attrs = study.user_attrs
    experiment = attrs.get(EXPERIMENT_KEY)
    if experiment is None:
        raise ConfigError(f"--study: {cfg.study_name!r} was not created by dnntune (no experiment stored)")
    search = experiment.get("search") or {}
    if cfg.n_trials is None and cfg.epoch_budget is None:
        cfg.n_trials = attrs.get("dnntune:n_trials")
        cfg.epoch_budget = attrs.get("dnntune:epoch_budget")
    if cfg.deadline is None:
        cfg.deadline = attrs.get(DEADLINE_KEY)
    if cfg.tracker is None:
        cfg.tracker = attrs.get(TRACKER_KEY) or "jsonl"
    if cfg.threads is None:
        cfg.threads = max(1, (os.cpu_count() or 1) // max(cfg.workers, 1))
    import torch

    torch.set_num_threads(cfg.threads)
    objectives = Objectives(attrs["dnntune:objectives"], attrs["dnntune:directions"])
    seed = search.get("seed")
    seed = None if seed is None else int(seed) + 7919 * cfg.index  # distinct streams per worker
    sampler = make_sampler(search.get("sampler", "tpe"), experiment, seed, cfg.workers, cfg.n_trials)
    pruner = make_pruner("none" if objectives.multi else search.get("pruner", "asha"), max_epochs(experiment))
    study = optuna.load_study(study_name=cfg.study_name, storage=storage, sampler=sampler, pruner=pruner)
    max_fail = int(search.get("max_consecutive_failures", 10))

    def after_trial(study: optuna.Study, trial) -> None:
        check_ctrl_c()
        if on_trial is not None:
            on_trial(study, trial)
        reasons = consecutive_failures(study)
        if len(reasons) >= max_fail:
            study.set_user_attr(STOP_KEY, f"{len(reasons)} consecutive failed trials; most common reason: "
                                          f"{common_reason(reasons)}")
            study.stop()
        elif not budget_left(study, cfg.n_trials, cfg.epoch_budget, cfg.deadline):
            study.stop()
        elif study.user_attrs.get(STOP_KEY):
            study.stop()

    if not budget_left(study, cfg.n_trials, cfg.epoch_budget, cfg.deadline) or study.user_attrs.get(STOP_KEY):
        return
    objective = objective_factory(experiment, objectives, cfg, _DataCache(), on_epoch)
    catch_ctrl_c()
    study.optimize(objective, n_trials=None, timeout=None, catch=(Exception,), callbacks=[after_trial],
                   gc_after_trial=False)
    check_ctrl_c()


# --- the final model ------------------------------------------------------------------------------


def best_trial(study: optuna.Study, objectives: Objectives):
    """The best complete trial (for several objectives: best on the first among the Pareto front).

    With no complete trial (every trial pruned), the pruned trial with the best reported
    validation value, so a study cut short still yields a final model."""
    sign = 1 if objectives.directions[0] == "maximize" else -1
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
                  if t.intermediate_values and "recipe" in t.user_attrs]
        if not pruned:
            return None
        return max(pruned, key=lambda t: sign * max(sign * v for v in t.intermediate_values.values()))
    pool = study.best_trials if objectives.multi else complete
    return max(pool, key=lambda t: (sign * t.values[0], -tie_loss(t.user_attrs.get("val") or {})))


def trial_value(trial, objectives: Objectives) -> float:
    """A trial's value on the first objective (a pruned trial: its best reported value)."""
    if trial.values:
        return trial.values[0]
    sign = 1 if objectives.directions[0] == "maximize" else -1
    return sign * max(sign * v for v in trial.intermediate_values.values())


def merge_train_val(data: Data) -> Data:
    """Train on train + val (for the final retrain); normalization statistics stay from train."""
    import dataclasses

    import torch

    from ..data import Split

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


def final_model(study: optuna.Study, objectives: Objectives, out_dir: Path, mode: str, quiet: bool = True,
                tracker: str = "jsonl"):
    """Retrain the best recipe on train+val (or keep the best trial's weights), test it once."""
    best = best_trial(study, objectives)
    if best is None:
        return None
    recipe = validate_recipe(best.user_attrs["recipe"], f"trial {best.number}")
    best_dir = out_dir / "best"
    folds = int(((study.user_attrs.get(EXPERIMENT_KEY) or {}).get("search") or {}).get("folds") or 1)
    # retrain: on all non-test data (train + val); best_trial: the trial's own (first-fold) weights and
    # normalization; either way the same test split
    data = load_data(recipe.data, recipe.seed, None if mode == "retrain" else fold_of(folds, 0))
    if mode == "retrain":
        epochs = int(best.user_attrs.get("best_epoch") or best.user_attrs.get("epochs") or recipe.train.epochs)
        train_section = recipe.train.model_copy(update={
            "epochs": max(epochs, 1), "early_stopping": recipe.train.early_stopping.model_copy(
                update={"patience": None}), "checkpoint": True})
        recipe = recipe.model_copy(update={"train": train_section})
        result = fit_tracked(Trainer(recipe, merge_train_val(data), out_dir=best_dir, resume=False,
                                     replay=improvements(best)), tracker)
        test = result.metrics["test"]
    else:
        from ..engine.checkpoint import load_weights
        from ..models import InputSpec, build_model

        model = build_model(recipe.model, InputSpec(data.kind, data.input_shape, data.name), data.num_outputs)
        load_weights(Path(best.user_attrs["dir"]) / "model.safetensors", model)
        trainer = Trainer(recipe, data)
        trainer._setup()
        trainer.model = model.to(trainer.device)
        test = trainer._evaluate(data.test, confusion=True)
        best_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save_weights(best_dir / "model.safetensors", model)
        ckpt.atomic_write_text(best_dir / "recipe.yaml", recipe.to_yaml())
        ckpt.write_json(best_dir / "summary.json", {"metrics": {"test": test}, "trial": best.number,
                                                    "mode": "best_trial"})
    return best, recipe, test


def study_summary(study: optuna.Study, objectives: Objectives, final, wall: float, storage_desc: str) -> dict:
    best = final[0] if final else best_trial(study, objectives)
    c = counts(study)
    summary = {
        "study": study.study_name, "storage": storage_desc,
        "objectives": dict(zip(objectives.names, objectives.directions)),
        "best": None if best is None else {
            "value": trial_value(best, objectives), "values": best.values, "trial": best.number,
            "state": best.state.name.lower(), "params": best.params},
        "trials": {k: c[k] for k in ("complete", "pruned", "fail")},
        "test": None if not final else final[2],
        "wall_seconds": round(wall, 2),
    }
    if objectives.multi:
        summary["pareto_front"] = [{"trial": t.number, "values": t.values} for t in study.best_trials]
    return summary


def default_study_name(experiment_path: str | None, data_name: str) -> str:
    return Path(experiment_path).stem if experiment_path else f"{data_name}-default"


def is_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
