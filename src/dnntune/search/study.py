"""What dnntune keeps in an Optuna study: its keys, objectives, budgets and the failure bookkeeping."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from ..config import SearchSection
from ..engine.metrics import default_metric, direction
from ..errors import ConfigError, UserError
from . import storage as st
from .interrupt import INTERRUPTED

EXPERIMENT_KEY = "dnntune:experiment"
DEADLINE_KEY = "dnntune:deadline"
STOP_KEY = "dnntune:stop_reason"
REQUEUED_KEY = "dnntune:requeued"
TRACKER_KEY = "dnntune:tracker"
OBJECTIVES_KEY = "dnntune:objectives"
DIRECTIONS_KEY = "dnntune:directions"
N_TRIALS_KEY = "dnntune:n_trials"
EPOCH_BUDGET_KEY = "dnntune:epoch_budget"
PLUGIN_DIRS_KEY = "dnntune:plugin_dirs"  # folders the experiment's plugins were imported from
FAIL_REASON = "fail_reason"
OBJECTIVE_EXTRAS = {"params": "minimize", "wall_seconds": "minimize", "epochs": "minimize"}


class StudyFailed(UserError):
    """The study stopped after too many consecutive failed trials."""


@dataclass
class Objectives:
    """What a study optimizes: names (first = the validation metric) and directions."""

    names: list[str]
    directions: list[str]

    @classmethod
    def from_experiment(cls, experiment: dict, search: SearchSection, task: str) -> Objectives:
        metric = search.metric or (experiment.get("train") or {}).get("metric") or default_metric(task)
        if isinstance(metric, dict):
            raise ConfigError("search.metric: must be a metric name, not a search dimension")
        names, dirs = [metric], [search.direction or direction(metric, task)]
        for extra in search.objectives or []:
            if extra != metric:
                names.append(extra)
                dirs.append(OBJECTIVE_EXTRAS.get(extra) or direction(extra, task))
        return cls(names, dirs)

    @classmethod
    def of_study(cls, study: optuna.Study) -> Objectives:
        return cls(study.user_attrs[OBJECTIVES_KEY], study.user_attrs[DIRECTIONS_KEY])

    @property
    def multi(self) -> bool:
        return len(self.names) > 1


def stored_search(study: optuna.Study) -> tuple[dict, SearchSection]:
    """The experiment a study was created from and its validated search section."""
    experiment = study.user_attrs.get(EXPERIMENT_KEY)
    if experiment is None:
        raise ConfigError(f"--study: {study.study_name!r} was not created by dnntune (no experiment stored)")
    return experiment, SearchSection(**(experiment.get("search") or {}))


def load_study(storage, study_name: str, **kwargs) -> optuna.Study:
    """An existing study; a ConfigError listing the studies there otherwise."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage, **kwargs)
    except KeyError:
        names = st.study_names(storage)
        raise ConfigError(f"--study: no study named {study_name!r} in {st.describe(storage)}; "
                          f"studies there: {', '.join(names) or '(none)'}") from None


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
