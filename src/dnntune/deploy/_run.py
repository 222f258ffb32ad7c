"""``load_run``: a run folder's recipe, preprocessing and weights as a model ready to predict."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..config import Recipe, validate_recipe
from ..data.preprocess import JSON_NAME, Prediction, Preprocessing
from ..errors import ConfigError, DataError
from ..models import InputSpec, build_model
from ._model import ModelOfRun

WEIGHTS = "model.safetensors"
RECIPE = "recipe.yaml"
SUMMARY = "summary.json"


@dataclass
class LoadedRun(ModelOfRun):
    """A trained model with everything needed to use it: recipe, preprocessing, weights, metrics.

    Made by :func:`load_run`. ``predict`` takes raw inputs (as the dataset builder produces them, before
    normalization) and returns a :class:`~dnntune.data.preprocess.Prediction`.

    Attributes:
        path: the run folder the model was loaded from (a tune run folder's ``best/``).
        recipe: the validated recipe from ``recipe.yaml``.
        preprocessing: normalization, input spec, task, outputs and class names (``preprocess.*``).
        model: the model with its trained weights, in eval mode on ``device``.
        summary: ``summary.json`` as a dict (metrics, epochs, ...), or None if the folder has none.
        device: where the model runs.
    """

    path: Path
    recipe: Recipe = field(repr=False)
    preprocessing: Preprocessing = field(repr=False)
    model: nn.Module = field(repr=False)
    summary: dict | None = field(default=None, repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


    @torch.no_grad()
    def _forward(self, inputs: Any, batch_size: int) -> torch.Tensor:
        """The model's raw outputs (N, num_outputs) for raw inputs, normalized as in training, batched.

        For regression these are still in the standardized target units; :meth:`predict` undoes that.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size: must be a positive integer (got {batch_size!r})")
        x = self.preprocessing.transform_inputs(inputs)
        self.model.eval()
        outs = [self.model(x[i:i + batch_size].to(self.device)).float().cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(outs) if outs else torch.empty(0, self.preprocessing.num_outputs)

    def predict(self, inputs: Any, batch_size: int = 512) -> Prediction:
        """Predict raw inputs of shape (N, *input_shape).

        Args:
            inputs: numpy array, torch tensor or nested list, in the dataset's raw units (not normalized).
            batch_size: samples per forward pass.

        Returns:
            A Prediction: ``outputs`` (N, num_outputs) always; for classification ``indices``, ``labels``
            (class names) and ``probabilities`` (N, C); for multi-label ``probabilities`` (sigmoids),
            ``decisions`` (0/1 with the run's thresholds) and ``labels`` (the decided names per sample); for
            regression ``values`` in the target's units.

        Raises:
            DataError: the inputs have the wrong shape (the message names expected and got), are not
                numeric or hold NaN/inf.
        """
        return self.preprocessing.outputs_to_predictions(self._forward(inputs, batch_size))

    def __repr__(self) -> str:
        p = self.preprocessing
        what = {"classification": f"{p.num_outputs} classes", "multilabel": f"{p.num_outputs} labels"}.get(
            p.task, "regression")
        return (f"LoadedRun({str(self.path)!r}: {self.recipe.model.family} on {p.dataset} "
                f"({p.kind} {'×'.join(map(str, p.input_shape))}, {what}), device {self.device})")


def resolve_run_dir(path: str | Path) -> Path:
    """The run folder ``path`` names: itself if it holds a model, else a tune run folder's ``best/``.

    Raises:
        DataError: ``path`` does not exist, or is neither a run folder nor a tune run folder.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such run folder")
    if not p.is_dir():
        raise DataError(f"{p}: is a file; pass the run folder that holds it ({p.parent})")
    if (p / WEIGHTS).exists() or (p / JSON_NAME).exists():
        return p
    if (p / "best").is_dir():
        return p / "best"
    raise DataError(f"{p}: not a dnntune run folder (no {WEIGHTS}); pass a `dnntune train` run folder, a "
                    f"trial folder (RUN/trials/0003), a study's RUN/best or a tune run folder")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: missing; a run folder holds {RECIPE}, {WEIGHTS} and {JSON_NAME}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from None


def _load_recipe(path: Path) -> Recipe:
    try:
        raw = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if isinstance(raw, dict) and raw.get("plugins"):
        _import_plugins(raw["plugins"], path.parent)
    try:
        return validate_recipe(raw, str(path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _import_plugins(names, run_dir: Path) -> None:
    """The plugins the run's recipe records, imported before its model is built: from sys.path (installed
    packages, PYTHONPATH), an entry point, or modules already imported (``--plugin``). Never from inside
    the run folder: a run folder from elsewhere cannot bring code that loading it would run. The folder the
    plugin was imported from at training time (summary.json ``model_plugin.path``) is named as a hint."""
    from ..plugins import load_plugins

    hint = ""
    try:
        record = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8")).get("model_plugin") or {}
        if record.get("path"):
            hint = f" (at training time it was imported from {record['path']})"
    except (OSError, ValueError, AttributeError):
        pass
    try:
        load_plugins(names, cwd=False)
    except ConfigError as e:
        raise ConfigError(f"{run_dir}: this run's model comes from a plugin that cannot be imported here: {e}"
                          f"{hint}; put the plugin's folder on PYTHONPATH or pass --plugin MODULE") from None


def _load_summary(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        summary = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(summary, dict):
        raise DataError(f"{path}: expected a JSON object")
    return summary


def _device(device: str | torch.device) -> torch.device:
    from ..engine.trainer import resolve_device

    try:
        return resolve_device(str(device))
    except ConfigError as e:
        raise ConfigError(str(e).replace("train.device", "device", 1)) from None
    except RuntimeError as e:  # an unparseable device string
        raise ConfigError(f"device: {device!r} is not a device; use cpu, cuda, cuda:N, mps or auto ({e})") from None


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Load a run folder's model with its recipe and preprocessing, ready to predict without the training data.

    Args:
        path: a ``dnntune train`` run folder, a trial folder (``RUN/trials/0003``), a study's ``RUN/best``,
            or a tune run folder (its ``best/`` is used).
        device: where the model runs: ``cpu`` (default), ``cuda``, ``cuda:N``, ``mps`` or ``auto``.

    Returns:
        A LoadedRun: ``recipe``, ``preprocessing``, ``model`` (eval mode), ``summary``, ``task``,
        ``class_names`` and ``predict(raw_inputs, batch_size=512)``.

    Raises:
        DataError: the folder or one of its files (recipe.yaml, model.safetensors, preprocess.json,
            preprocess.safetensors, summary.json) is missing or unreadable; the message names the file.
        ConfigError: the recipe is invalid here (e.g. a model family from a plugin that is not loaded), or
            the device is unavailable.

    Example:
        >>> import tempfile
        >>> from dnntune import train, validate_recipe
        >>> r = validate_recipe({"data": {"name": "iris"}, "model": {"family": "linear"}, "train": {"epochs": 2}})
        >>> folder = tempfile.mkdtemp()
        >>> _ = train(r, out_dir=folder)
        >>> run = load_run(folder)
        >>> run.task, run.class_names
        ('classification', ['setosa', 'versicolor', 'virginica'])
        >>> run.predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]).probabilities.shape
        (2, 3)
    """
    run_dir = resolve_run_dir(path)
    recipe = _load_recipe(run_dir / RECIPE)
    pre = Preprocessing.load(run_dir)
    dev = _device(device)
    spec = InputSpec(pre.kind, pre.input_shape, pre.dataset, pre.input_info)
    try:
        model = build_model(recipe.model, spec, pre.num_outputs)
    except ConfigError as e:
        raise ConfigError(f"{run_dir / RECIPE}: {e}") from None
    _load_weights(run_dir / WEIGHTS, model)
    model.to(dev).eval()
    return LoadedRun(path=run_dir, recipe=recipe, preprocessing=pre, model=model,
                     summary=_load_summary(run_dir / SUMMARY), device=dev)


def _load_weights(path: Path, model: nn.Module) -> None:
    from safetensors import SafetensorError

    from ..engine.checkpoint import load_weights

    if not path.is_file():
        raise DataError(f"{path}: missing; a run folder holds {RECIPE}, {WEIGHTS} and {JSON_NAME}")
    try:
        load_weights(path, model)
    except (SafetensorError, OSError) as e:
        raise DataError(f"{path}: not a readable safetensors file ({e})") from None
    except RuntimeError as e:  # load_state_dict: missing/unexpected keys or shapes
        first = str(e).strip().splitlines()
        raise DataError(f"{path}: the weights do not fit the model that recipe.yaml describes "
                        f"({first[1].strip() if len(first) > 1 else first[0] if first else e})") from None
