"""``dnntune tune``: create or continue a study, run its workers, retrain the best recipe, test once."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..config import SearchSection
from ..data import load_data
from ..engine import checkpoint as ckpt
from ..errors import ConfigError
from . import storage as st
from .final import final_model, study_summary
from .interrupt import INTERRUPTED, catching_ctrl_c, check_ctrl_c
from .objective import fold_of
from .selection import best_trial, trial_value
from .space import validate_experiment
from .study import (
    DEADLINE_KEY,
    DIRECTIONS_KEY,
    EPOCH_BUDGET_KEY,
    EXPERIMENT_KEY,
    FAIL_REASON,
    N_TRIALS_KEY,
    OBJECTIVES_KEY,
    PLUGIN_DIRS_KEY,
    REQUEUED_KEY,
    STOP_KEY,
    TRACKER_KEY,
    Objectives,
    StudyFailed,
    budget_left,
    counts,
)
from .worker import WorkerConfig, run_worker

# search settings that may change when a study is continued (budgets, parallelism)
_RUNTIME_KEYS = ("n_trials", "timeout", "epoch_budget", "workers", "final", "max_consecutive_failures")


def _identity(experiment: dict) -> str:
    e = copy.deepcopy(experiment)
    for k in _RUNTIME_KEYS:
        (e.get("search") or {}).pop(k, None)
    return json.dumps(e, sort_keys=True)


class LiveView:
    """Trials complete / pruned / failed / running, best so far and ETA, redrawn in place."""

    def __init__(self, study_name: str, objectives: Objectives, n_trials: int | None, deadline: float | None,
                 workers: int, quiet: bool):
        self.quiet = quiet
        self.objectives = objectives
        self.n_trials = n_trials
        self.deadline = deadline
        self.workers = workers
        self.t0 = time.time()
        self.current = ""
        self._last = 0.0
        if quiet:
            return
        from rich.console import Console
        from rich.live import Live

        self.live = Live(console=Console(stderr=True), refresh_per_second=4, transient=False)
        self.title = study_name
        self.live.start()

    def epoch(self, number: int, epoch: int, row: dict) -> None:
        metric = self.objectives.names[0]
        val = row.get(f"val_{metric}")
        self.current = f"trial {number}: epoch {epoch}" + (f", val {metric} {val:.4f}" if val is not None else "")

    def update(self, study: optuna.Study, force: bool = False) -> None:
        if self.quiet or (not force and time.time() - self._last < 0.5):
            return
        self._last = time.time()
        from rich.table import Table

        trials = study.get_trials(deepcopy=False)
        c = counts(study)
        best = best_trial(study, self.objectives.directions)
        elapsed = time.time() - self.t0
        done = c["complete"] + c["pruned"] + c["fail"]
        eta = "?"
        if self.deadline is not None:
            eta = f"{max(self.deadline - time.time(), 0):.0f} s"
        if self.n_trials is not None:
            durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                         if t.state.is_finished() and t.datetime_complete and t.datetime_start]
            if durations:
                left = max(self.n_trials - done, 0) * (sum(durations) / len(durations)) / self.workers
                eta = f"{left:.0f} s" if eta == "?" else f"{min(left, float(eta[:-2])):.0f} s"
        metric = self.objectives.names[0]
        table = Table(title=f"study {self.title}", show_header=True, expand=False)
        for col in ("trials", "complete", "pruned", "failed", "running", f"best {metric}", "elapsed", "ETA"):
            table.add_column(col, justify="right")
        value = None if best is None else trial_value(best, self.objectives.directions[0])
        best_s = "-" if best is None else f"{value:.4f} (trial {best.number})"
        budget = f"/{self.n_trials}" if self.n_trials else ""
        table.add_row(f"{done}{budget}", str(c["complete"]), str(c["pruned"]), str(c["fail"]), str(c["running"]),
                      best_s, f"{elapsed:.0f} s", eta)
        table.caption = self.current
        self.live.update(table)

    def close(self, study: optuna.Study | None = None) -> None:
        if self.quiet:
            return
        if study is not None:
            self.current = ""
            self.update(study, force=True)
        self.live.stop()


def _requeue_interrupted(study: optuna.Study) -> int:
    """Trials stopped by Ctrl-C are run again when the study continues (once each)."""
    done = set(study.user_attrs.get(REQUEUED_KEY, []))
    again = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
             if t.user_attrs.get(FAIL_REASON) == INTERRUPTED and t.number not in done]
    for t in again:
        study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number}, skip_if_exists=False)
        done.add(t.number)
    if again:
        study.set_user_attr(REQUEUED_KEY, sorted(done))
    return len(again)


def _spawn_workers(cfg: WorkerConfig, k: int, storage_url: str) -> list[subprocess.Popen]:
    logs = cfg.out_dir / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(k):
        cmd = [sys.executable, "-m", "dnntune", "worker", "--storage", storage_url, "--study", cfg.study_name,
               "--out", str(cfg.out_dir), "--index", str(i), "--workers", str(k), "--quiet"]
        if cfg.threads:
            cmd += ["--threads", str(cfg.threads)]
        log = open(logs / f"worker-{i}.log", "ab")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_worker_env()))
        log.close()
    return procs


def _worker_env() -> dict[str, str]:
    """This process's environment, with the folders plugins were imported from (beside the experiment
    file) first on PYTHONPATH, so every worker imports the same plugin modules."""
    from ..plugins import plugin_dirs

    env = dict(os.environ)
    path = plugin_dirs()
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    if path:
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    return env


def _wait_workers(procs: list[subprocess.Popen], study: optuna.Study, view: LiveView) -> None:
    try:
        while any(p.poll() is None for p in procs):
            view.update(study)
            time.sleep(1.0)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        raise


def tune(experiment: dict, out_dir: Path, storage_url: str | None = None, study_name: str | None = None,
         quiet: bool = False, source: str = "experiment", tracker: str = "jsonl") -> dict:
    """Run (or continue) a study for ``experiment`` and return the summary written to ``out_dir``.

    ``tracker``: per-epoch tracking of each trial (``jsonl``, ``tensorboard`` or ``none``); the HTML
    report is written to ``out_dir/report`` at the end (a failing report only warns)."""
    t0 = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = SearchSection(**(experiment.get("search") or {}))  # parsed once; travels as this object
    sample = validate_experiment(experiment, source)
    if search.warm_start:  # a bad warm-start source fails before any data, folder or study is made
        from .warm_start import resolve_sources

        resolve_sources(search)
    data = load_data(sample.data, sample.seed, fold_of(search.folds, 0))  # a bad data section fails here, once
    if len(data.val) == 0:
        raise ConfigError("data.val_fraction: 0 leaves no validation split to tune on; set it > 0 or use "
                          "search.folds: k (cross-validation)")
    _check_model(experiment, sample, data)
    objectives = Objectives.from_experiment(experiment, search, data.task)
    study_name = study_name or "study"
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = st.open_storage(storage_url, out_dir)
    storage_desc = storage_url or str(out_dir / st.JOURNAL_NAME)
    study, lr_prior = _open_study(experiment, search, objectives, storage, study_name, storage_desc, tracker, quiet)
    deadline = None if search.timeout is None else t0 + search.timeout
    study.set_user_attr(DEADLINE_KEY, deadline)
    optuna.storages.fail_stale_trials(study)  # trials of a killed run are re-queued now
    _requeue_interrupted(study)
    cfg = WorkerConfig(storage_url=storage_desc, study_name=study_name, out_dir=out_dir, workers=search.workers,
                       n_trials=search.n_trials, epoch_budget=search.epoch_budget, deadline=deadline)
    view = LiveView(study_name, objectives, search.n_trials, deadline, search.workers, quiet)
    try:
        with catching_ctrl_c():
            _run_workers(study, storage, cfg, search.workers, view)
    finally:
        view.close(study)
    return _finish(study, objectives, search, out_dir, storage_desc, tracker, quiet, t0, lr_prior)


def _check_model(experiment: dict, sample, data) -> None:
    """Before any trial: every model family the experiment names takes this data's kind, and a plugin
    family builds for the sample recipe (a broken plugin is one clear error, not a study of failed trials)."""
    from ..models import MODELS, InputSpec, build_model
    from ..models.core import check_kind

    spec = InputSpec(data.kind, data.input_shape, data.name, data.input_info)
    model = experiment.get("model")
    family = model.get("family") if isinstance(model, dict) else model
    for name in family.get("choice", []) if isinstance(family, dict) else [sample.model.family]:
        if isinstance(name, str) and name in MODELS:
            check_kind(name, spec)
    if MODELS.get(sample.model.family).meta.get("plugin"):
        build_model(sample.model, spec, data.num_outputs)


def _open_study(experiment: dict, search: SearchSection, objectives: Objectives, storage, study_name: str,
                storage_desc: str, tracker: str, quiet: bool):
    """Create or continue the study; refuse one created from a different experiment. Returns (study, lr_prior)."""
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, directions=objectives.directions,
                                    load_if_exists=True)
    except ValueError as e:
        raise ConfigError(f"--study: {study_name!r} exists with other objectives ({e})") from None
    stored = study.user_attrs.get(EXPERIMENT_KEY)
    lr_prior = None
    if search.lr_prior == "range_test":  # narrow the lr dimension(s) before the first trial
        from .lr_prior import LR_PRIOR_KEY, apply_lr_prior

        experiment, lr_prior = apply_lr_prior(experiment, study.user_attrs.get(LR_PRIOR_KEY), quiet)
    if stored is not None and _identity(stored) != _identity(experiment):
        raise ConfigError(f"--study: {study_name!r} in {storage_desc} was created from a different experiment "
                          f"(search space or settings changed); continue it with the same file or use --study NEW")
    if stored is None and search.warm_start:  # a new study: the earlier studies' best recipes run first, once
        from .warm_start import enqueue_warm_start

        enqueue_warm_start(study, experiment, search, objectives, quiet)
    for key, value in ((EXPERIMENT_KEY, experiment), (OBJECTIVES_KEY, objectives.names),
                       (DIRECTIONS_KEY, objectives.directions), (N_TRIALS_KEY, search.n_trials),
                       (EPOCH_BUDGET_KEY, search.epoch_budget), (TRACKER_KEY, tracker)):
        study.set_user_attr(key, value)
    from ..plugins import plugin_dirs

    if experiment.get("plugins"):  # where plugins beside the experiment file were found, for `dnntune worker`
        study.set_user_attr(PLUGIN_DIRS_KEY, plugin_dirs())
    if lr_prior is not None:
        from .lr_prior import LR_PRIOR_KEY

        study.set_user_attr(LR_PRIOR_KEY, lr_prior)
    if study.user_attrs.get(STOP_KEY):
        study.set_user_attr(STOP_KEY, None)
    return study, lr_prior


def _run_workers(study: optuna.Study, storage, cfg: WorkerConfig, workers: int, view: LiveView) -> None:
    """Run workers until the budget is used, waiting for trials that other workers still run."""
    while True:
        check_ctrl_c()
        if workers == 1:
            run_worker(cfg, storage, on_trial=lambda s, t: view.update(s, force=True),
                       on_epoch=lambda n, e, row: (view.epoch(n, e, row), view.update(study)))
        else:
            _wait_workers(_spawn_workers(cfg, workers, cfg.storage_url), study, view)
        optuna.storages.fail_stale_trials(study)
        c = counts(study)
        if study.user_attrs.get(STOP_KEY):
            break
        if c["waiting"] and budget_left(study, cfg.n_trials, cfg.epoch_budget, cfg.deadline):
            continue
        if c["running"] and (cfg.deadline is None or time.time() < cfg.deadline):
            # trials of other workers (or of a dead one, until its heartbeat goes stale)
            view.current = f"waiting for {c['running']} running trial(s) of other workers"
            view.update(study, force=True)
            time.sleep(2.0)
            continue
        break
    check_ctrl_c()


def _finish(study: optuna.Study, objectives: Objectives, search: SearchSection, out_dir: Path, storage_desc: str,
            tracker: str, quiet: bool, t0: float, lr_prior: dict | None) -> dict:
    """The final model, the summary and the report (the summary is saved before the report is drawn)."""
    stop = study.user_attrs.get(STOP_KEY)
    final = None
    if not stop:
        if not quiet:
            print("retraining the best recipe" + (" on train+val" if search.final == "retrain" else "") +
                  " and evaluating it once on the test split", file=sys.stderr)
        final = final_model(study, objectives, search, out_dir, tracker=tracker)
    summary = study_summary(study, objectives, final, time.time() - t0, storage_desc)
    if lr_prior is not None:
        summary["lr_prior"] = lr_prior["tests"]
    if stop:
        summary["stopped"] = stop
    ckpt.write_json(out_dir / "summary.json", summary)
    report = _write_report(study, out_dir, storage_desc, quiet)
    if report is not None:  # the summary was saved first, so a failing report never loses it
        summary["report"] = str(report)
        ckpt.write_json(out_dir / "summary.json", summary)
    if stop:
        raise StudyFailed(f"study stopped: {stop}. Completed trials are kept in {storage_desc}.")
    if final is None:
        where = (f"in the report's failure table ({report})" if report is not None else
                 f"with `optuna trials --study-name {study.study_name} --storage {storage_desc}`")
        raise StudyFailed(f"no trial completed (trials: {summary['trials']}); see the trials' fail_reason {where}")
    return summary


def _write_report(study: optuna.Study, out_dir: Path, storage_desc: str, quiet: bool) -> Path | None:
    """The study's HTML report; a failure warns and never loses the study or its summary."""
    try:
        from ..report import build_report

        if not quiet:
            print("writing the report", file=sys.stderr)
        return build_report(study, out_dir / "report", out_dir, storage_desc).path
    except Exception as e:  # noqa: BLE001 - the study is done; the report can be rebuilt with `dnntune report`
        print(f"dnntune: warning: the report could not be written ({type(e).__name__}: {e}); rebuild it with "
              f"`dnntune report {out_dir}`", file=sys.stderr)
        return None


def worker_main(storage_url: str, study_name: str, out_dir: Path, index: int, workers: int,
                threads: int | None, quiet: bool = True) -> None:
    """``dnntune worker``: join a running study (this or another machine); unless quiet, a line per trial."""
    cfg = WorkerConfig(storage_url=storage_url, study_name=study_name, out_dir=out_dir, index=index or os.getpid(),
                       workers=workers, threads=threads)

    def said(study: optuna.Study, trial) -> None:
        value = "" if trial.values is None else " " + ", ".join(f"{v:.4g}" for v in trial.values)
        why = trial.user_attrs.get(FAIL_REASON, "")
        print(f"trial {trial.number}: {trial.state.name.lower()}{value}{f' ({why})' if why else ''}",
              file=sys.stderr, flush=True)

    run_worker(cfg, on_trial=None if quiet else said)
    if not quiet:
        print(f"worker done: the study's budget is used or it was stopped ({storage_url}, {study_name})",
              file=sys.stderr)
