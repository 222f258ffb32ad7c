"""The user's own data in Python: numpy arrays, torch tensors or a map-style torch ``Dataset`` → ``RawData``.

Everything here ends in the same :func:`~dnntune.data.core.prepare` as the built-in datasets: the same
seeded (stratified) splits, normalization learned on the training split only, and the test split
evaluated once. A ``Dataset`` is read once through a ``torch.utils.data.DataLoader`` (``num_workers``
processes) into memory, so it must fit in memory; the trainer then batches it as tensors (or, with
``data.in_memory: false``, keeps it off the training device).

The experiment names such data ``data: {name: python}``: the dataset of this process's ``data=`` argument
(:func:`provided`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError
from ..registry import NoKnobs
from .core import DATASETS, KINDS, TASKS, RawData

NAME = "python"
DATA_KEYS = ("x", "y", "x_test", "y_test", "kind", "task", "class_names")
_provided: dict[str, RawData] = {}


def _numpy(a: Any, what: str) -> np.ndarray:
    try:
        import torch

        if isinstance(a, torch.Tensor):
            return a.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        out = np.asarray(a)
    except (ValueError, TypeError) as e:
        raise DataError(f"{what}: cannot be read as an array ({e})") from None
    if out.dtype == bool:
        out = out.astype(np.uint8)
    return out


def _is_dataset(obj: Any) -> bool:
    from torch.utils.data import Dataset

    return isinstance(obj, Dataset)


def read_dataset(ds: Any, what: str, num_workers: int = 0, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a map-style torch Dataset of (input, target) items, read once through a DataLoader."""
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(ds, IterableDataset) or not hasattr(ds, "__len__"):
        raise DataError(f"{what}: an iterable-style Dataset has no length; give a map-style Dataset (with "
                        "__len__ and __getitem__) or arrays")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise DataError(f"num_workers: must be a whole number >= 0 (got {num_workers!r})")
    xs, ys = [], []
    try:
        for batch in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers):
            if not isinstance(batch, (list, tuple)) or len(batch) != 2:
                raise DataError(f"{what}: items must be (input, target) pairs")
            xs.append(_numpy(batch[0], f"{what} inputs"))
            ys.append(_numpy(batch[1], f"{what} targets"))
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's __getitem__: name it, no traceback
        from ..plugins import _where

        raise DataError(f"{what}: reading it failed: {_where(e)}") from None
    if not xs:
        raise DataError(f"{what}: is empty")
    return np.concatenate(xs), np.concatenate(ys)


def as_raw(obj: Any, what: str = "data", task: str = "auto", kind: str = "auto", num_workers: int = 0) -> RawData:
    """The user's data as a :class:`RawData`: ``(x, y)``, a dict with ``x, y`` (and optionally ``x_test,
    y_test, kind, task, class_names``), a map-style Dataset, a pair (train Dataset, test Dataset), or a
    RawData. ``task`` auto: integer labels → classification (as the npz loader decides); ``kind`` auto:
    inferred from the shape by :mod:`dnntune.data.kinds` (``data.kind`` overrides it)."""
    if isinstance(obj, RawData):
        return obj
    fields: dict[str, Any]
    if isinstance(obj, dict):
        bad = [k for k in obj if k not in DATA_KEYS]
        if bad:
            raise DataError(f"{what}: unknown key {bad[0]!r}; allowed: {', '.join(DATA_KEYS)}")
        fields = dict(obj)
    elif _is_dataset(obj):
        x, y = read_dataset(obj, what, num_workers)
        fields = {"x": x, "y": y}
    elif isinstance(obj, (tuple, list)) and len(obj) == 2 and all(_is_dataset(o) for o in obj):
        x, y = read_dataset(obj[0], what, num_workers)
        x_test, y_test = read_dataset(obj[1], f"{what} (test)", num_workers)
        fields = {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        fields = {"x": obj[0], "y": obj[1]}
    else:
        raise DataError(f"{what}: expected (x, y) arrays or tensors, a dict with {', '.join(DATA_KEYS)}, or a "
                        f"map-style torch Dataset of (input, target) pairs; got {type(obj).__name__}")
    return _raw(fields, what, fields.pop("task", None) or task, fields.pop("kind", None) or kind)


def _raw(f: dict, what: str, task: str, kind: str) -> RawData:
    if "x" not in f or "y" not in f:
        raise DataError(f"{what}: needs both x and y")
    if ("x_test" in f) != ("y_test" in f):
        raise DataError(f"{what}: give both x_test and y_test, or neither")
    if task not in ("auto", *TASKS):
        raise DataError(f"{what}: task {task!r}; allowed: auto, {', '.join(TASKS)}")
    if kind not in ("auto", *KINDS):
        raise DataError(f"{what}: kind {kind!r}; allowed: auto, {', '.join(KINDS)}")
    x, y = _numpy(f["x"], f"{what} x"), _numpy(f["y"], f"{what} y")
    x_test = None if f.get("x_test") is None else _numpy(f["x_test"], f"{what} x_test")
    y_test = None if f.get("y_test") is None else _numpy(f["y_test"], f"{what} y_test")
    for xs, ys, split in ((x, y, ""), (x_test, y_test, "_test")):
        if xs is not None and (xs.ndim == 0 or ys.ndim == 0 or len(xs) != len(ys)):
            raise DataError(f"{what}: x{split} has {len(xs) if xs.ndim else 0} samples but y{split} has "
                            f"{len(ys) if ys.ndim else 0}; they must match")
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{what}: x_test samples have shape {x_test.shape[1:]} but x samples {x.shape[1:]}")
    if kind != "auto":  # a declared kind: the inputs in its layout (data.kind may still convert them)
        from .kinds import as_kind

        x = as_kind(x, kind, what)
        x_test = None if x_test is None else as_kind(x_test, kind, f"{what} x_test")
    names = f.get("class_names")
    if task == "multilabel" or (task == "classification" and names is not None):
        cast = np.float32 if task == "multilabel" else np.int64
        y, y_test = y.astype(cast), None if y_test is None else y_test.astype(cast)
        task_out = task
    else:
        from .files import _targets

        task_out, y, y_test, auto_names = _targets(f"{what} y", task, y, y_test)
        names = names if names is not None else auto_names
    return RawData(x, y, task_out, kind, x_test=x_test, y_test=y_test,
                   class_names=None if names is None else [str(n) for n in names], source=what)


def provide(raw: RawData | None) -> None:
    """Make ``raw`` the data of ``data: {name: python}`` in this process (None: forget it)."""
    if raw is None:
        _provided.pop(NAME, None)
    else:
        _provided[NAME] = raw


@DATASETS.register(NAME, NoKnobs, task="any", kind="any")
def provided(knobs: NoKnobs) -> RawData:
    """The data given in Python: dnntune.train(..., data=...) or dnntune.tune(..., data=...)."""
    if NAME not in _provided:
        raise DataError(f"data.name: {NAME} is the data given in Python (dnntune.train(..., data=...) or "
                        "dnntune.tune(..., data=...)); from the command line name a dataset, a file loader (npz, "
                        "csv) or a dataset registered by a plugin (see `dnntune datasets`)")
    return _provided[NAME]
