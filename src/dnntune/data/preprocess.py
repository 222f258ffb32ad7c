"""The preprocessing a run folder carries, so its model can be used without the training data.

A run folder (``dnntune train``, each trial, a study's ``best/``) holds two files next to
``model.safetensors`` and ``recipe.yaml``:

- ``preprocess.safetensors``: the input normalization (``mean``, ``std``: per feature for tabular data,
  per channel for signals and images) and, for regression, the target scaling (``y_mean``, ``y_std``);
  each only when the run used it (``data.normalize: true``).
- ``preprocess.json``: the dataset name, the input kind and per-sample shape, the task, the number of
  outputs, the class names, the feature (column) names of tabular data read from a CSV, the target shape
  and which tensors the ``.safetensors`` file holds (with its SHA-256, so a pair written by two different
  runs is refused); for multi-label runs the per-label decision ``thresholds`` (chosen on the validation
  split). It is written last: it marks the pair as complete.

:class:`Preprocessing` applies them exactly as training did: :meth:`Preprocessing.transform_inputs`
normalizes raw inputs as ``data.core.prepare`` normalizes a split (bit-identical), and
:meth:`Preprocessing.outputs_to_predictions` undoes the target scaling as the trainer's evaluation does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .core import FEATURIZERS, KINDS, TASKS, Data, Featurizer, Kind, Task
from .prediction import Prediction

JSON_NAME = "preprocess.json"
TENSORS_NAME = "preprocess.safetensors"
FORMAT = 1
_TENSORS = ("mean", "std", "y_mean", "y_std")


@dataclass
class Preprocessing:
    """How a run's model sees its data: input kind and shape, normalization, task, outputs, class names.

    Build it from a prepared dataset with :meth:`from_data`, save it with :meth:`to_files` (or
    :func:`write_preprocessing`), read it back with :meth:`load`.

    Example:
        >>> import torch
        >>> p = Preprocessing(dataset="toy", task="classification", kind="tabular", input_shape=(2,),
        ...                   num_outputs=2, class_names=["no", "yes"],
        ...                   mean=torch.tensor([1.0, 2.0]), std=torch.tensor([2.0, 4.0]))
        >>> p.transform_inputs([[3.0, 2.0]])
        tensor([[1., 0.]])
        >>> p.outputs_to_predictions(torch.tensor([[0.0, 2.0]])).labels
        ['yes']
        >>> Preprocessing.from_files(p.to_files()) == p
        True
    """

    dataset: str
    task: Task
    kind: Kind
    input_shape: tuple[int, ...]
    num_outputs: int
    class_names: list[str] | None = None
    target_shape: tuple[int, ...] = ()
    mean: torch.Tensor | None = field(default=None, repr=False)
    std: torch.Tensor | None = field(default=None, repr=False)
    y_mean: torch.Tensor | None = field(default=None, repr=False)
    y_std: torch.Tensor | None = field(default=None, repr=False)
    source: str = ""
    feature_names: list[str] | None = None
    featurizer: Featurizer | None = field(default=None, repr=False)  # raw inputs → model inputs (fitted)
    thresholds: list[float] | None = None  # multi-label: per-label decision thresholds on sigmoid(logit)

    @property
    def input_info(self) -> dict:
        """What the model family needs beyond kind and shape (``InputSpec.info``), from the featurizer."""
        return {} if self.featurizer is None else self.featurizer.input_info()

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.target_shape = tuple(int(s) for s in self.target_shape)
        if self.feature_names is not None:
            self.feature_names = [str(n) for n in self.feature_names]
        if self.thresholds is not None:
            self.thresholds = [float(t) for t in self.thresholds]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preprocessing):
            return NotImplemented
        if self._meta() != other._meta():
            return False
        for name in _TENSORS:
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None) or (a is not None and not (a.shape == b.shape and torch.equal(a, b))):
                return False
        return True

    # --- building and saving ----------------------------------------------------------------------
    @classmethod
    def from_data(cls, data: Data, thresholds: list[float] | None = None) -> Preprocessing:
        """The preprocessing of a prepared dataset (its training-split statistics).

        Args:
            data: what ``load_data`` / ``prepare`` returned (for the final retrain on train+val, the merged
                data: its statistics are still those of the training split).
            thresholds: multi-label: the run's per-label decision thresholds (``Trainer.fit_thresholds``).

        Returns:
            The dataset's input spec, task, outputs, class names, normalization and target scaling.

        Example:
            >>> from dnntune.config import validate_recipe
            >>> from dnntune.data import load_data
            >>> r = validate_recipe({"data": {"name": "iris"}, "model": {"family": "linear"}})
            >>> p = Preprocessing.from_data(load_data(r.data, r.seed))
            >>> p.kind, p.input_shape, p.num_outputs, p.class_names[0], tuple(p.mean.shape)
            ('tabular', (4,), 3, 'setosa', (4,))
        """
        def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().cpu().contiguous().clone()

        return cls(dataset=data.name, task=data.task, kind=data.kind, input_shape=tuple(data.input_shape),
                   num_outputs=int(data.num_outputs),
                   class_names=None if data.class_names is None else [str(n) for n in data.class_names],
                   target_shape=tuple(data.train.y.shape[1:]) if data.task == "regression" else (),
                   mean=cpu(data.mean), std=cpu(data.std), y_mean=cpu(data.y_mean), y_std=cpu(data.y_std),
                   source=str(data.info.get("source", "")), feature_names=data.feature_names,
                   featurizer=data.featurizer, thresholds=thresholds)

    def _featurizer_state(self) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
        if self.featurizer is None:
            return None, {}
        state, files = self.featurizer.to_state()
        return {"type": self.featurizer.type, "state": state, "files": sorted(files)}, files

    def _meta(self) -> dict[str, Any]:
        meta = {"dataset": self.dataset, "task": self.task, "kind": self.kind,
                "input_shape": list(self.input_shape), "num_outputs": self.num_outputs,
                "class_names": self.class_names, "target_shape": list(self.target_shape), "source": self.source,
                "feature_names": self.feature_names}
        if self.featurizer is not None:
            meta["featurizer"] = self._featurizer_state()[0]
        if self.thresholds is not None:
            meta["thresholds"] = self.thresholds
        return meta

    def to_files(self) -> dict[str, bytes]:
        """The files that describe this preprocessing, file name → content, in the order to write them.

        ``preprocess.safetensors`` (the tensors present among mean, std, y_mean, y_std) comes first, then
        the featurizer's own files (e.g. a tokenizer), and ``preprocess.json`` last: the JSON file marks a
        complete set.

        Example:
            >>> p = Preprocessing("toy", "regression", "tabular", (3,), 1)
            >>> list(p.to_files())
            ['preprocess.safetensors', 'preprocess.json']
        """
        from safetensors.torch import save

        from .. import __version__

        tensors = {n: getattr(self, n).detach().cpu().contiguous() for n in _TENSORS
                   if getattr(self, n) is not None}
        blob = save(tensors)
        _fstate, extra = self._featurizer_state()
        meta = {"format": FORMAT, **self._meta(), "tensors": sorted(tensors),
                "tensors_sha256": hashlib.sha256(blob).hexdigest(), "dnntune": __version__}
        return {TENSORS_NAME: blob, **extra, JSON_NAME: (json.dumps(meta, indent=2) + "\n").encode()}

    # --- reading ----------------------------------------------------------------------------------
    @classmethod
    def from_files(cls, files: dict[str, bytes], where: str = "run folder") -> Preprocessing:
        """Parse what :meth:`to_files` wrote; ``where`` names the folder in error messages.

        Raises:
            DataError: a file is missing, malformed, from a newer dnntune, or the two do not belong together.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load

        jpath, tpath = f"{where}/{JSON_NAME}", f"{where}/{TENSORS_NAME}"
        if JSON_NAME not in files:
            raise DataError(f"{where}: not a dnntune run folder (no {JSON_NAME}); it was written by an older "
                            f"dnntune or is not a run (see docs/deploy.md)")
        try:
            meta = json.loads(files[JSON_NAME].decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{jpath}: not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise DataError(f"{jpath}: expected a JSON object")
        fmt = meta.get("format")
        if not isinstance(fmt, int) or fmt > FORMAT:
            raise DataError(f"{jpath}: format {fmt!r} is not readable by this dnntune (reads format {FORMAT}); "
                            f"upgrade dnntune")
        required = ("dataset", "task", "kind", "input_shape", "num_outputs", "tensors", "tensors_sha256")
        missing = [k for k in required if k not in meta]
        if missing:
            raise DataError(f"{jpath}: missing field(s) {', '.join(missing)}")
        if meta["task"] not in TASKS:
            raise DataError(f"{jpath}: task {meta['task']!r}; allowed: {', '.join(TASKS)}")
        if meta["kind"] not in KINDS:
            raise DataError(f"{jpath}: kind {meta['kind']!r}; allowed: {', '.join(KINDS)}")
        if TENSORS_NAME not in files:
            raise DataError(f"{tpath}: missing (it holds the normalization statistics {jpath} names)")
        blob = files[TENSORS_NAME]
        if hashlib.sha256(blob).hexdigest() != meta["tensors_sha256"]:
            raise DataError(f"{tpath}: does not match {jpath} (changed, or the two were written by different "
                            f"runs); copy both files of the same run")
        try:
            tensors = load(blob)
        except SafetensorError as e:
            raise DataError(f"{tpath}: not a readable safetensors file ({e})") from None
        if sorted(tensors) != sorted(meta["tensors"]):
            raise DataError(f"{tpath}: holds {sorted(tensors)}, {jpath} names {sorted(meta['tensors'])}")
        p = cls(dataset=str(meta["dataset"]), task=meta["task"], kind=meta["kind"],
                input_shape=tuple(meta["input_shape"]), num_outputs=int(meta["num_outputs"]),
                class_names=meta.get("class_names"), target_shape=tuple(meta.get("target_shape") or ()),
                source=str(meta.get("source", "")), feature_names=_feature_names(meta, jpath),
                featurizer=_featurizer(meta, files, where), thresholds=_thresholds(meta, jpath),
                **{n: tensors.get(n) for n in _TENSORS})
        if (p.mean is None) != (p.std is None):
            raise DataError(f"{tpath}: holds only one of mean and std")
        if p.mean is not None:
            try:
                ok = torch.broadcast_shapes(p.mean.shape, p.std.shape, p.input_shape) == p.input_shape
            except RuntimeError:
                ok = False
            if not ok:
                raise DataError(f"{tpath}: mean {tuple(p.mean.shape)} / std {tuple(p.std.shape)} do not fit the "
                                f"input shape {p.input_shape} in {jpath}")
        return p

    @classmethod
    def load(cls, run_dir: str | Path) -> Preprocessing:
        """Read ``preprocess.json`` and ``preprocess.safetensors`` from a run folder.

        Args:
            run_dir: a run folder (``dnntune train`` run, a trial folder, a study's ``best/``).

        Raises:
            DataError: naming the folder or file when the files are missing, unreadable or do not belong
                together.

        Example:
            >>> import tempfile
            >>> d = tempfile.mkdtemp()
            >>> Preprocessing.load(d)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            dnntune.errors.DataError: ...: not a dnntune run folder (no preprocess.json); ...
        """
        run_dir = Path(run_dir)
        files = {}
        for name in (JSON_NAME, TENSORS_NAME, *_featurizer_files(run_dir)):
            try:
                files[name] = (run_dir / name).read_bytes()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise DataError(f"{run_dir / name}: cannot be read ({e.strerror or e})") from None
        return cls.from_files(files, str(run_dir))

    # --- applying ---------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str] | None:
        """Classification: the name of each class index; multi-label: of each label (the index as text where the
        dataset has none)."""
        if self.task not in ("classification", "multilabel"):
            return None
        names = list(self.class_names or [])
        return names[:self.num_outputs] + [str(i) for i in range(len(names), self.num_outputs)]

    def describe_input(self) -> str:
        """The expected input, e.g. ``(N, 1, 8, 8) (digits: image, 1×8×8)``."""
        size = (f"{self.input_shape[0]} features" if self.kind == "tabular" and len(self.input_shape) == 1
                else "×".join(map(str, self.input_shape)))
        return f"({', '.join(['N', *map(str, self.input_shape)])}) ({self.dataset}: {self.kind}, {size})"

    def check_shape(self, shape) -> None:
        """A DataError naming the expected and the given shape unless ``shape`` is (N, *input_shape)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != 1 + len(self.input_shape) or shape[1:] != self.input_shape:
            hint = ""
            if shape == self.input_shape:
                hint = "; one sample: add a batch dimension (x[None])"
            elif len(shape) >= 2 and int(np.prod(shape[1:])) == int(np.prod(self.input_shape)):
                hint = f"; reshape to (N, {', '.join(map(str, self.input_shape))})"
            raise DataError(f"inputs: expected shape {self.describe_input()}, got {shape}{hint}")

    def transform_inputs(self, x: Any) -> torch.Tensor:
        """Raw inputs (N, *input_shape) as the model's float32 inputs, normalized as in training.

        The same conversion and arithmetic as ``data.core.prepare`` (``(x - mean) / std`` in float32),
        so the result is bit-identical to the training-time split.

        Args:
            x: a numpy array, torch tensor or nested list of numbers, shape (N, *input_shape), in the units
                the dataset builder produced (e.g. ``image_folder``: pixels / 255 at ``size`` × ``size``).

        Returns:
            A float32 CPU tensor of shape (N, *input_shape).

        Raises:
            DataError: the inputs are not numeric, have the wrong shape (naming expected and got) or hold
                NaN/inf.

        Example:
            >>> p = Preprocessing("toy", "regression", "tabular", (3,), 1)
            >>> p.transform_inputs([1, 2, 3])
            Traceback (most recent call last):
            dnntune.errors.DataError: inputs: expected shape (N, 3) (toy: tabular, 3 features), got (3,); one \
sample: add a batch dimension (x[None])
        """
        dtype = torch.float32
        if self.featurizer is not None:  # raw rows / texts → numeric features, as prepare() did for the splits
            x, dtype = self.featurizer.transform(x), self.featurizer.dtype
        if isinstance(x, torch.Tensor):
            a = x.detach().cpu()
            if a.dtype == torch.bool or a.is_complex():
                raise DataError(f"inputs: must be real numbers (got a {a.dtype} tensor)")
        else:
            a = np.asarray(x)
            if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
                raise DataError(f"inputs: must be real numbers (got dtype {a.dtype})")
        self.check_shape(a.shape)
        if isinstance(a, torch.Tensor):
            v = a.to(dtype).contiguous()
        else:
            v = torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # as prepare converts a split
        bad = ~torch.isfinite(v)
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            raise DataError(f"inputs: {int(bad.sum())} NaN/inf value(s), first at index {idx}; the model was "
                            f"trained on finite values only")
        if self.mean is not None:
            v = (v - self.mean) / self.std
        return v

    def outputs_to_predictions(self, outputs: torch.Tensor) -> Prediction:
        """Model outputs (N, num_outputs) as a :class:`Prediction`.

        Classification: softmax probabilities, the predicted index (argmax of the outputs) and its class
        name. Multi-label: per-label sigmoid probabilities, the 0/1 ``decisions`` (probability ≥ the run's
        threshold of that label, 0.5 without saved thresholds) and the names of the labels decided per sample.
        Regression: the target scaling undone exactly as the trainer's evaluation undoes it
        (``out * y_std + y_mean``), in the target's shape.

        Example:
            >>> import torch
            >>> p = Preprocessing("toy", "regression", "tabular", (3,), 1,
            ...                   y_mean=torch.tensor(10.0), y_std=torch.tensor(2.0))
            >>> p.outputs_to_predictions(torch.tensor([[0.5], [-1.0]])).values
            array([11.,  8.], dtype=float32)
        """
        out = torch.as_tensor(outputs).detach().cpu().float()
        if out.ndim == 1 and self.num_outputs == 1:
            out = out[:, None]
        if out.ndim != 2 or out.shape[1] != self.num_outputs:
            raise DataError(f"outputs: expected shape (N, {self.num_outputs}), got {tuple(out.shape)}")
        if self.task == "multilabel":
            return multilabel_prediction(out, self.labels or [], self.thresholds)
        if self.task == "classification":
            labels = self.labels or []
            idx = out.argmax(1) if len(out) else torch.empty(0, dtype=torch.long)
            return Prediction(outputs=out.numpy(), indices=idx.numpy(), labels=[labels[i] for i in idx.tolist()],
                              probabilities=torch.softmax(out, dim=1).numpy())
        if self.y_std is not None:  # as Trainer._evaluate: targets (N,) get outputs (N, 1)
            if out.ndim == 1 + len(self.target_shape):
                out = out * self.y_std + self.y_mean
            else:
                out = out * self.y_std.view(-1) + self.y_mean.view(-1)
        values = out.reshape(len(out), *self.target_shape)
        return Prediction(outputs=out.numpy(), values=values.numpy())


def _featurizer_files(run_dir: Path) -> list[str]:
    """The extra files preprocess.json's featurizer names (read before the JSON is validated: a broken JSON
    file is reported by ``from_files``)."""
    try:
        meta = json.loads((run_dir / JSON_NAME).read_text())
        names = meta["featurizer"]["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [n for n in names if isinstance(n, str) and n == Path(n).name and n not in (JSON_NAME, TENSORS_NAME)]


def _featurizer(meta: dict, files: dict[str, bytes], where: str) -> Featurizer | None:
    """The fitted featurizer preprocess.json describes (None for plain numeric data)."""
    desc = meta.get("featurizer")
    if desc is None:
        return None
    jpath = f"{where}/{JSON_NAME}"
    if not isinstance(desc, dict) or desc.get("type") not in FEATURIZERS:
        kind = desc.get("type") if isinstance(desc, dict) else desc
        raise DataError(f"{jpath}: featurizer {kind!r} is not known to this dnntune; known: "
                        f"{', '.join(sorted(FEATURIZERS)) or '(none)'}")
    missing = [n for n in desc.get("files") or [] if n not in files]
    if missing:
        raise DataError(f"{where}/{missing[0]}: missing (the featurizer in {jpath} needs it)")
    return FEATURIZERS[desc["type"]].from_state(desc.get("state") or {}, {n: files[n] for n in desc.get("files") or []})


def multilabel_prediction(out, names: list[str], thresholds: list[float] | None) -> Prediction:
    """Multi-label logits (N, K) → probabilities, decisions with the thresholds and the decided label names.

    The decisions are :func:`dnntune.engine.metrics.decide` (float32 sigmoid ≥ threshold), exactly as the
    trainer's metrics take them, so predictions reproduce the run's test metrics. Works on numpy (onnxruntime)
    and torch outputs alike.
    """
    from ..engine.metrics import decide, sigmoid32

    logits = torch.as_tensor(out).float()
    decisions = decide(logits, thresholds).numpy()
    return Prediction(outputs=logits.numpy(), probabilities=sigmoid32(logits).numpy(), decisions=decisions,
                      labels=[[names[k] for k in row.nonzero()[0]] for row in decisions])


def _thresholds(meta: dict, jpath: str) -> list[float] | None:
    """``thresholds`` of a preprocess.json: absent, or one number in [0, 1] per output of a multi-label run."""
    t = meta.get("thresholds")
    if t is None:
        return None
    n = meta["num_outputs"]
    if not (meta["task"] == "multilabel" and isinstance(t, list) and len(t) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in t)):
        raise DataError(f"{jpath}: thresholds must be a list of {n} numbers in [0, 1], one per label of a "
                        f"multi-label run")
    return [float(v) for v in t]


def _feature_names(meta: dict, jpath: str) -> list[str] | None:
    """``feature_names`` of a preprocess.json: absent (older folders, non-CSV data), one name per feature, or
    with a featurizer the raw columns it reads (a tabular encoder turns them into more features)."""
    names = meta.get("feature_names")
    if names is None:
        return None
    shape = meta["input_shape"]
    if meta.get("featurizer") is not None and isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(shape) == 1
            and len(names) == shape[0]):
        raise DataError(f"{jpath}: feature_names must be a list of column names, one per feature of input_shape "
                        f"{shape}")
    return names


def write_preprocessing(run_dir: str | Path, data: Data) -> list[Path]:
    """Write ``preprocess.safetensors`` and ``preprocess.json`` for ``data`` into a run folder (atomically).

    The trainer calls it when it writes ``model.safetensors`` / ``recipe.yaml``. With the training data at
    hand it also completes a run folder written by an older dnntune:
    ``write_preprocessing(run_dir, load_data(recipe.data, recipe.seed))`` (the same split and statistics as
    ``dnntune train`` and trials without ``search.folds``).

    Args:
        run_dir: the run folder (created if missing).
        data: the prepared dataset the run trained on.

    Returns:
        The paths written, ``preprocess.json`` last.

    Example:
        >>> import tempfile
        >>> from dnntune.config import validate_recipe
        >>> from dnntune.data import load_data
        >>> r = validate_recipe({"data": {"name": "iris"}, "model": {"family": "linear"}})
        >>> d = tempfile.mkdtemp()
        >>> [p.name for p in write_preprocessing(d, load_data(r.data, r.seed))]
        ['preprocess.safetensors', 'preprocess.json']
        >>> Preprocessing.load(d).class_names
        ['setosa', 'versicolor', 'virginica']
    """
    from ..engine.checkpoint import atomic_write_bytes  # here: engine imports data

    run_dir = Path(run_dir)
    written = []
    for name, blob in Preprocessing.from_data(data).to_files().items():
        atomic_write_bytes(run_dir / name, blob)
        written.append(run_dir / name)
    return written
