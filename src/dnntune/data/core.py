"""Datasets as typed splits: the registry's raw arrays become seeded, normalized train/val/test tensors."""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from ..errors import DataError
from ..registry import Registry
from .kinds import resolve_kind

Task = Literal["classification", "regression", "multilabel"]
# sequence: (N, L) integer token ids (text), padded with id 0
Kind = Literal["tabular", "signal", "image", "sequence"]
TASKS: tuple[str, ...] = typing.get_args(Task)
KINDS: tuple[str, ...] = typing.get_args(Kind)

DATASETS: Registry = Registry("dataset")


class Featurizer:
    """Raw inputs → model inputs, with every statistic learned from the training split only.

    For data whose raw form is not a numeric array (tabular files with categories and missing values, text):
    a dataset builder returns the raw inputs in ``RawData.x`` / ``x_test`` and an *unfitted* featurizer in
    ``RawData.featurizer``. :func:`prepare` calls :meth:`fit` on the training split of this seed and fold
    (never on validation or test rows), transforms every split with the fitted copy, and keeps it in
    ``Data.featurizer``; the run folder saves it (``preprocess.json`` and any files of :meth:`to_state`), so
    ``predict`` / ``serve`` apply exactly the same transform to raw inputs.

    Subclasses set ``type`` (the key in :data:`FEATURIZERS`, see :func:`register_featurizer`) and implement
    :meth:`fit`, :meth:`transform`, :meth:`to_state` and :meth:`from_state`.
    """

    type: ClassVar[str] = ""
    kind: Kind = "tabular"           # what the transformed inputs are
    dtype: torch.dtype = torch.float32  # their tensor dtype (token ids: torch.long)

    def fit(self, x_train: Any, y_train: np.ndarray) -> Featurizer:
        """A fitted copy, learned from the training split's raw inputs (and targets, if it needs them)."""
        raise NotImplementedError

    def transform(self, x: Any) -> np.ndarray:
        """Raw inputs (any number of rows) → a numeric array (N, *input_shape); a DataError on bad input."""
        raise NotImplementedError

    def normalize_mask(self) -> np.ndarray | None:
        """Per feature (tabular) whether ``data.normalize`` standardizes it; None: all (or nothing, for
        kinds that are never standardized, e.g. token ids)."""
        return None

    def input_info(self) -> dict[str, Any]:
        """JSON-able facts a model family needs beyond kind and shape (``InputSpec.info``): e.g. the
        categorical columns and their levels, the vocabulary size and padding id."""
        return {}

    def to_state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """(JSON-able state for preprocess.json, extra files for the run folder, name → bytes)."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any], files: dict[str, bytes]) -> Featurizer:
        """The fitted featurizer :meth:`to_state` described; a DataError naming what is wrong otherwise."""
        raise NotImplementedError


FEATURIZERS: dict[str, type[Featurizer]] = {}


def register_featurizer(cls: type[Featurizer]) -> type[Featurizer]:
    """Class decorator: make a featurizer type loadable from run folders by its ``type``."""
    if not cls.type or cls.type in FEATURIZERS:
        raise ValueError(f"featurizer type {cls.type!r} is empty or registered twice")
    FEATURIZERS[cls.type] = cls
    return cls


@dataclass
class RawData:
    """What a dataset builder returns: numpy arrays, plus the dataset's own test split if it has one.

    ``x`` has shape (N, F) for tabular data, (N, C, L) for signals and (N, C, H, W) for images.
    ``y`` holds integer class indices (classification) or floats (regression, (N,) or (N, K)).
    ``dataset`` may replace ``x``/``y`` for data too large to hold in memory (a torch Dataset).
    ``feature_names``: tabular data read from a file with named columns (csv): the column of each feature,
    in the order of ``x``'s columns, so prediction can pick them out of a file by name.
    """

    x: np.ndarray | None
    y: np.ndarray | None
    task: Task
    kind: Kind
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    class_names: list[str] | None = None
    source: str = ""
    feature_names: list[str] | None = None
    featurizer: Featurizer | None = None  # raw x / x_test: fitted on the training split in prepare()


@dataclass
class Split:
    """One split as CPU tensors (moved to the device by the loader)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    """A prepared dataset: train / val / test splits and what a model needs to know about them."""

    name: str
    task: Task
    kind: Kind
    input_shape: tuple[int, ...]
    num_outputs: int
    train: Split
    val: Split
    test: Split
    class_names: list[str] | None = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    y_mean: torch.Tensor | None = None  # regression targets are standardized for training;
    y_std: torch.Tensor | None = None   # metrics are reported in the original units
    info: dict = field(default_factory=dict)
    feature_names: list[str] | None = None  # tabular data from named columns: RawData.feature_names
    featurizer: Featurizer | None = None  # fitted on the training split (RawData.featurizer)

    @property
    def input_info(self) -> dict:
        """What a model family needs beyond kind and shape (``InputSpec.info``)."""
        return {} if self.featurizer is None else self.featurizer.input_info()

    @property
    def num_classes(self) -> int | None:
        return self.num_outputs if self.task == "classification" else None

    def describe(self) -> str:
        shape = "×".join(str(s) for s in self.input_shape)
        what = {"classification": f"{self.num_outputs} classes",
                "multilabel": f"{self.num_outputs} labels (multi-label)"}.get(self.task, "regression")
        return (f"{self.name}: {self.kind} {shape}, {what}; "
                f"train {len(self.train)} / val {len(self.val)} / test {len(self.test)}")


def cache_dir() -> Path:
    """Where generated datasets are cached (``$DNNTUNE_CACHE`` or ``~/.cache/dnntune``)."""
    p = Path(os.environ.get("DNNTUNE_CACHE", Path.home() / ".cache" / "dnntune"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def _check_finite(name: str, x: np.ndarray, what: str) -> None:
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{name}: {what} are not numeric (dtype {x.dtype})")
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.argwhere(bad)[0]
        kind = "NaN" if np.isnan(x[tuple(idx)]) else "infinite"
        raise DataError(
            f"{name}: {what} contain {int(bad.sum())} NaN/inf value(s); first {kind} at index "
            f"{tuple(int(i) for i in idx)}. Clean or impute the data first."
        )


def _split(x, y, fraction: float, seed: int, stratify: bool):
    strat = y if stratify else None
    if stratify:
        _, counts = np.unique(y, return_counts=True)
        n_hold = int(round(len(y) * fraction))
        if counts.min() < 2 or n_hold < len(counts):
            strat = None  # too few samples per class to stratify; fall back to a seeded shuffle
    return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=strat)


def _fold(x, y, fold: tuple[int, int], seed: int, stratify: bool, name: str):
    """Fold ``i`` of ``k`` of the non-test data as validation, the other k-1 folds as training."""
    i, k = fold
    if not 0 <= i < k:
        raise ValueError(f"fold {i} of {k}")
    if k > len(y):
        raise DataError(f"search.folds: {k} folds need at least {k} non-test samples; {name} has {len(y)}")
    if stratify and np.unique(y, return_counts=True)[1].min() >= k:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:  # a class with fewer samples than folds: plain seeded folds
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    train_idx, val_idx = list(splitter.split(x, y if stratify else None))[i]
    return x[train_idx], x[val_idx], y[train_idx], y[val_idx]


def _checked(raw: RawData, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and targets of a dataset, after the checks every dataset must pass."""
    if raw.x is None:
        raise DataError(f"{name}: streaming datasets are not supported by this loader path")
    x = np.asarray(raw.x, dtype=object) if raw.featurizer is not None else np.asarray(raw.x)
    y = np.asarray(raw.y)
    if len(x) != len(y):
        raise DataError(f"{name}: {len(x)} inputs but {len(y)} targets")
    if len(x) < 3:
        raise DataError(f"{name}: needs at least 3 samples, has {len(x)}")
    names = raw.feature_names
    if names is not None and (raw.kind != "tabular" or x.ndim != 2 or len(names) != x.shape[1]):
        raise DataError(f"{name}: {len(names)} feature names for inputs of shape {tuple(x.shape[1:])}; feature "
                        "names are for tabular data, one per column")
    if raw.featurizer is None:  # raw inputs of a featurizer are checked by its transform
        _check_finite(name, x, "inputs")
    if raw.task != "classification":  # regression values, multi-label 0/1 indicators
        _check_finite(name, y, "targets")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: classification targets must be integer class indices")
    if raw.task == "multilabel":
        _check_multilabel(name, y, raw.class_names)
    return x, y


def _check_multilabel(name: str, y: np.ndarray, label_names: list[str] | None) -> None:
    """Multi-label targets: (N, K) with K >= 2 labels, every value 0 or 1, one name per label if named."""
    if y.ndim != 2 or y.shape[1] < 2:
        raise DataError(f"{name}: multi-label targets must be 0/1 indicators of shape (N, K) with K >= 2 labels, "
                        f"got shape {tuple(y.shape)}; a single 0/1 label is task: classification")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"{name}: multi-label targets must be 0 or 1; sample {i}, label {k} is {y[i, k].item()!r}")
    if label_names is not None and len(label_names) != y.shape[1]:
        raise DataError(f"{name}: {len(label_names)} label names for {y.shape[1]} labels")


def _check_labels_in_training(name: str, y_train: np.ndarray, label_names: list[str] | None) -> None:
    """Every label of a multi-label dataset must occur in the training split: a label the model never sees
    positive can only be learned as "never", and its threshold and F1 mean nothing."""
    absent = np.flatnonzero(np.asarray(y_train).sum(0) == 0)
    if len(absent):
        names = [label_names[k] if label_names else str(k) for k in absent]
        raise DataError(f"{name}: label(s) {', '.join(map(repr, names))} never occur in the training split "
                        f"({len(y_train)} samples); drop those labels or add samples that have them")


def _partition(raw: RawData, x, y, section, seed: int, fold: tuple[int, int] | None) -> tuple:
    """(x_train, x_val, x_test, y_train, y_val, y_test): the dataset's own test split or a seeded one, then
    the validation split (``val_fraction``, none, or fold ``i`` of ``k``)."""
    stratify = raw.task == "classification"
    if raw.x_test is not None:
        x_test, y_test = np.asarray(raw.x_test, dtype=object if raw.featurizer else None), np.asarray(raw.y_test)
        if raw.featurizer is None:
            _check_finite(section.name, x_test, "test inputs")
        x_trval, y_trval = x, y
    else:
        x_trval, x_test, y_trval, y_test = _split(x, y, section.test_fraction, seed, stratify)
    if fold is None and section.val_fraction == 0:
        x_train, x_val, y_train, y_val = x_trval, x_trval[:0], y_trval, y_trval[:0]
    elif fold is None:
        x_train, x_val, y_train, y_val = _split(x_trval, y_trval, section.val_fraction, seed + 1, stratify)
    else:
        x_train, x_val, y_train, y_val = _fold(x_trval, y_trval, fold, seed + 1, stratify, section.name)
    return x_train, x_val, x_test, y_train, y_val, y_test


def _tensor(a, dtype) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)


def _statistics(x_train, y_train, kind: str, classification: bool, normalize: bool, mask=None):
    """(mean, std, y_mean, y_std) of the training split, None where not normalized. Inputs: per feature for
    tabular data, per channel for signals and images (kept as broadcastable (1, ...) shapes); features whose
    ``mask`` entry is False (a featurizer's category indices) keep mean 0 and std 1; token ids
    (``sequence``) are never standardized. Regression targets are standardized, multi-label 0/1 targets not."""
    if not normalize:
        return None, None, None, None
    if kind == "sequence":
        mean = std = None
    else:
        xt = _tensor(x_train, torch.float32)
        dims = (0,) if kind == "tabular" else tuple(i for i in range(xt.ndim) if i != 1)
        mean, std = xt.mean(dim=dims, keepdim=True), xt.std(dim=dims, keepdim=True).clamp_min(1e-8)
        if mask is not None:
            keep = torch.as_tensor(np.asarray(mask, dtype=bool)).view(1, -1)
            mean, std = torch.where(keep, mean, 0.0), torch.where(keep, std, 1.0)
    if classification:
        return mean, std, None, None
    yt = _tensor(y_train, torch.float32)
    return mean, std, yt.mean(0), yt.std(0).clamp_min(1e-8)


def prepare(raw: RawData, section, seed: int, fold: tuple[int, int] | None = None) -> Data:
    """Split (stratified, seeded), check and normalize a dataset. Statistics come from train only.

    ``fold=(i, k)``: instead of the ``val_fraction`` split, fold ``i`` of a seeded (stratified) k-fold
    partition of the non-test data is the validation split (cross-validated search); the test split is
    the same as without folds."""
    name = section.name
    raw = resolve_kind(raw, section)  # data.kind, the dataset's own kind, or inferred from the shape
    x, y = _checked(raw, name)
    classification = raw.task == "classification"
    x_train, x_val, x_test, y_train, y_val, y_test = _partition(raw, x, y, section, seed, fold)
    if raw.task == "multilabel":
        _check_labels_in_training(f"{name} ({raw.source})" if raw.source else name, y_train, raw.class_names)
    kind, fz, xdt = raw.kind, raw.featurizer, torch.long if raw.kind == "sequence" else torch.float32
    if fz is not None:  # learned on this training split only, then applied to every split
        fz = fz.fit(x_train, y_train)
        x_train, x_val, x_test = fz.transform(x_train), fz.transform(x_val), fz.transform(x_test)
        x, kind, xdt = x_train, fz.kind, fz.dtype
    mask = None if fz is None else fz.normalize_mask()
    mean, std, y_mean, y_std = _statistics(x_train, y_train, kind, raw.task != "regression", section.normalize,
                                           mask)
    ydt = {"classification": torch.long, "regression": torch.float32, "multilabel": torch.float32}[raw.task]

    def split(xs, ys) -> Split:
        v, t = _tensor(xs, xdt), _tensor(ys, ydt)
        return Split((v - mean) / std if mean is not None else v, (t - y_mean) / y_std if y_mean is not None else t)

    if classification:
        labels = np.concatenate([y_train, y_val, y_test])
        if labels.min() < 0:
            raise DataError(f"{name}: class indices must be >= 0")
        num_outputs = int(max(labels.max() + 1, len(raw.class_names or [])))
    else:
        num_outputs = 1 if y_train.ndim == 1 else int(y_train.shape[1])
    return Data(
        name=name, task=raw.task, kind=kind, input_shape=tuple(x.shape[1:]), num_outputs=num_outputs,
        train=split(x_train, y_train), val=split(x_val, y_val), test=split(x_test, y_test),
        class_names=raw.class_names, y_mean=y_mean, y_std=y_std,
        mean=None if mean is None else mean.squeeze(0), std=None if std is None else std.squeeze(0),
        info={"source": raw.source}, feature_names=None if raw.feature_names is None else list(raw.feature_names),
        featurizer=fz,
    )


def load_data(section, seed: int = 0, fold: tuple[int, int] | None = None) -> Data:
    """Build the dataset named in ``section`` (a validated ``data:`` section) and prepare its splits
    (``fold=(i, k)``: fold i of k of the non-test data as validation, see ``prepare``)."""
    entry = DATASETS.get(section.name, "data.name")
    raw = entry.builder(section.knobs)
    return prepare(raw, section, seed, fold)
