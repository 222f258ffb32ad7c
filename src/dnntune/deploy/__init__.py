"""Using a trained model without its training data: ``load_run`` a run folder, ``predict`` raw inputs."""

from ..data.preprocess import Prediction, Preprocessing
from ._run import LoadedRun, load_run, resolve_run_dir

__all__ = ["LoadedRun", "Prediction", "Preprocessing", "load_run", "resolve_run_dir"]
