"""Predictions as rows: an id, the predicted label or value(s), optionally class probabilities; CSV or JSON.

Columns: ``id``; classification: ``label`` (the class name) and, with probabilities, ``p_<class>`` per
class; multi-label: ``labels`` (the decided label names joined by ``;``), one 0/1 column ``y_<label>`` per label
and, with probabilities, ``p_<label>`` per label; regression: ``value`` for one target, ``value_0``,
``value_1``, ... for several, in the target's own units. Numbers are written with the shortest text that reads
back as the same float32.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..data.preprocess import Prediction
from ..errors import DataError


def _num(v) -> float:
    return float(str(np.float32(v)))  # shortest float32 text: 0.9, not 0.8999999761581421


def prediction_rows(pred: Prediction, ids: list[str], class_names: list[str] | None = None,
                    proba: bool = False) -> tuple[list[str], list[list]]:
    """The columns and one row per sample of a prediction.

    Args:
        pred: what ``predict`` returned.
        ids: one id per sample (``Inputs.ids``).
        class_names: classification: the name of each class (``LoadedRun.class_names``), for the
            probability columns.
        proba: add one probability column ``p_<class>`` per class (classification).

    Returns:
        ``(columns, rows)``: column names and rows of plain Python values (str and float).

    Example:
        >>> import numpy as np
        >>> p = Prediction(outputs=np.zeros((1, 2)), indices=np.array([1]), labels=["yes"],
        ...                probabilities=np.array([[0.25, 0.75]], dtype=np.float32))
        >>> prediction_rows(p, ["0"], ["no", "yes"], proba=True)
        (['id', 'label', 'p_no', 'p_yes'], [['0', 'yes', 0.25, 0.75]])
    """
    if len(ids) != len(pred):
        raise ValueError(f"{len(ids)} ids for {len(pred)} predictions")
    if pred.decisions is not None:
        return _multilabel_rows(pred, ids, class_names, proba)
    if pred.labels is not None:
        columns = ["id", "label"]
        rows = [[str(i), str(label)] for i, label in zip(ids, pred.labels)]
        if proba:
            names = class_names or [str(c) for c in range(pred.probabilities.shape[1])]
            columns += [f"p_{n}" for n in names]
            for row, p in zip(rows, pred.probabilities):
                row += [_num(v) for v in p]
        return columns, rows
    values = np.asarray(pred.values).reshape(len(pred), -1)
    columns = ["id"] + (["value"] if values.shape[1] == 1 and np.ndim(pred.values) == 1
                        else [f"value_{k}" for k in range(values.shape[1])])
    return columns, [[str(i), *(_num(v) for v in row)] for i, row in zip(ids, values)]


def _multilabel_rows(pred: Prediction, ids: list[str], names: list[str] | None, proba: bool):
    """Multi-label: ``id``, ``labels`` (decided names joined by ``;``), ``y_<label>`` 0/1, optionally ``p_<label>``.

    Example:
        >>> import numpy as np
        >>> p = Prediction(outputs=np.zeros((1, 2)), labels=[["a"]], decisions=np.array([[1, 0]]),
        ...                probabilities=np.array([[0.75, 0.25]], dtype=np.float32))
        >>> _multilabel_rows(p, ["0"], ["a", "b"], proba=True)
        (['id', 'labels', 'y_a', 'y_b', 'p_a', 'p_b'], [['0', 'a', 1, 0, 0.75, 0.25]])
    """
    names = names or [str(k) for k in range(pred.decisions.shape[1])]
    columns = ["id", "labels", *(f"y_{n}" for n in names)] + ([f"p_{n}" for n in names] if proba else [])
    rows = []
    for i, labels, d, p in zip(ids, pred.labels, pred.decisions, pred.probabilities):
        rows.append([str(i), ";".join(labels), *(int(v) for v in d)] + ([_num(v) for v in p] if proba else []))
    return columns, rows


def rows_to_csv(columns: list[str], rows: list[list]) -> str:
    """The rows as CSV text with a header line."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue()


def rows_to_json(columns: list[str], rows: list[list]) -> str:
    """The rows as a JSON list of objects, one per sample, keyed by column."""
    return json.dumps([dict(zip(columns, row)) for row in rows], indent=2)


def write_csv(path: str | Path, columns: list[str], rows: list[list]) -> Path:
    """Write the rows as a CSV file, atomically (a reader never sees half a file); missing folders are made.

    Raises:
        DataError: the file cannot be written (no such folder, permission, full disk); the message names it.
    """
    from ..engine.checkpoint import atomic_write_bytes

    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"{path}: is a folder; --out names the CSV file to write, e.g. {path / 'preds.csv'}")
    try:
        atomic_write_bytes(path, rows_to_csv(columns, rows).encode())
    except OSError as e:
        raise DataError(f"{path}: cannot be written ({e.strerror or e})") from None
    return path
