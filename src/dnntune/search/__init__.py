"""Search: experiment space → Optuna study → trials of the one training path → the final model."""

import warnings

from optuna.exceptions import ExperimentalWarning

from .defaults import complete_experiment, default_experiment
from .selection import best_trial, top_trials, trial_value
from .space import check_space, grid_space, suggest_recipe, validate_experiment
from .storage import HeartbeatJournalStorage, open_storage
from .study import StudyFailed
from .tune import tune, worker_main
from .worker import WorkerConfig, run_worker

# we rely on Optuna's experimental heartbeat / grouping APIs on purpose; the warnings are noise to users
warnings.filterwarnings("ignore", category=ExperimentalWarning)

__all__ = ["HeartbeatJournalStorage", "StudyFailed", "WorkerConfig", "best_trial", "check_space",
           "complete_experiment", "default_experiment", "grid_space", "open_storage", "run_worker", "suggest_recipe",
           "top_trials", "trial_value", "tune", "validate_experiment", "worker_main"]
