"""A worker: runs trials of an existing study until its budget is used or the study is stopped.

``dnntune tune`` runs one in-process or K as processes; ``dnntune worker`` joins from anywhere that
reaches the storage."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import optuna

from . import storage as st
from .factories import make_pruner, make_sampler, max_epochs
from .interrupt import catching_ctrl_c, check_ctrl_c
from .objective import DataCache, objective_factory
from .study import (
    DEADLINE_KEY,
    EPOCH_BUDGET_KEY,
    N_TRIALS_KEY,
    PLUGIN_DIRS_KEY,
    STOP_KEY,
    TRACKER_KEY,
    Objectives,
    budget_left,
    common_reason,
    consecutive_failures,
    load_study,
    stored_search,
)


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


def _complete_config(cfg: WorkerConfig, study: optuna.Study) -> None:
    """Budgets, deadline and tracker not given to this worker come from the study (set by `tune`)."""
    attrs = study.user_attrs
    if cfg.n_trials is None and cfg.epoch_budget is None:
        cfg.n_trials, cfg.epoch_budget = attrs.get(N_TRIALS_KEY), attrs.get(EPOCH_BUDGET_KEY)
    if cfg.deadline is None:
        cfg.deadline = attrs.get(DEADLINE_KEY)
    if cfg.tracker is None:
        cfg.tracker = attrs.get(TRACKER_KEY) or "jsonl"
    if cfg.threads is None:
        cfg.threads = max(1, (os.cpu_count() or 1) // max(cfg.workers, 1))


def import_plugins(experiment: dict, study: optuna.Study) -> None:
    """Import the plugins the study's experiment names (looked up also in the folders they were found in
    when the study was created); a clear error naming the module if this machine cannot import it."""
    from ..errors import ConfigError
    from ..plugins import load_plugins

    try:
        load_plugins(experiment.get("plugins"), extra_dirs=study.user_attrs.get(PLUGIN_DIRS_KEY) or [])
    except ConfigError as e:
        raise ConfigError(f"study {study.study_name!r} needs its experiment's plugins on this machine: {e}. "
                          "Install or copy the module here and put its folder on PYTHONPATH") from None


def run_worker(cfg: WorkerConfig, storage=None, on_trial=None, on_epoch=None) -> None:
    """Run trials of an existing study until the budget is used (or the study is stopped)."""
    import torch

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = storage or st.open_storage(cfg.storage_url, cfg.out_dir)
    study = load_study(storage, cfg.study_name)
    experiment, search = stored_search(study)
    import_plugins(experiment, study)
    _complete_config(cfg, study)
    torch.set_num_threads(cfg.threads)
    objectives = Objectives.of_study(study)
    seed = None if search.seed is None else search.seed + 7919 * cfg.index  # distinct streams per worker
    sampler = make_sampler(search.sampler, experiment, seed, cfg.workers, cfg.n_trials)
    pruner = make_pruner("none" if objectives.multi else search.pruner, max_epochs(experiment))
    study = load_study(storage, cfg.study_name, sampler=sampler, pruner=pruner)

    def after_trial(study: optuna.Study, trial) -> None:
        check_ctrl_c()
        if on_trial is not None:
            on_trial(study, trial)
        reasons = consecutive_failures(study)
        if len(reasons) >= search.max_consecutive_failures:
            study.set_user_attr(STOP_KEY, f"{len(reasons)} consecutive failed trials; most common reason: "
                                          f"{common_reason(reasons)}")
            study.stop()
        elif not budget_left(study, cfg.n_trials, cfg.epoch_budget, cfg.deadline) or study.user_attrs.get(STOP_KEY):
            study.stop()

    if not budget_left(study, cfg.n_trials, cfg.epoch_budget, cfg.deadline) or study.user_attrs.get(STOP_KEY):
        return
    objective = objective_factory(experiment, search, objectives, cfg, DataCache(), on_epoch)
    with catching_ctrl_c():
        study.optimize(objective, n_trials=None, timeout=None, catch=(Exception,), callbacks=[after_trial],
                       gc_after_trial=False)
        check_ctrl_c()
