"""Datasets from files a user brings: ``csv``, ``parquet`` and ``npz`` here; ``idx`` (MNIST format) and
``image_folder`` in :mod:`dnntune.data.image_files`.

Every loader returns a :class:`RawData`; splitting, NaN checks on inputs and normalization happen later in
:func:`~dnntune.data.core.prepare`. Relative paths are resolved against the current working directory and
``~`` is expanded. Every error is a :class:`~dnntune.errors.DataError` whose message starts with the file.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..errors import DataError
from ..registry import Knobs
from .core import DATASETS, Featurizer, RawData
from .tabular import DEFAULT_MISSING, TabularEncoder, column_type, is_missing, missing_markers

TaskKnob = Literal["auto", "classification", "regression", "multilabel"]

# "auto" picks classification for integer targets with at most this many distinct values ...
MAX_AUTO_CLASSES = 50
# ... and with no more distinct values than max(MIN_AUTO_CLASSES, AUTO_CLASS_SHARE * rows)
MIN_AUTO_CLASSES = 10
AUTO_CLASS_SHARE = 0.05

MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def _resolve(path: str) -> Path:
    return Path(path).expanduser()


def class_folder_roots(path: str) -> tuple[Path, Path | None]:
    """(training root, own test root or None) of a folder with one subfolder per class (``image_folder``,
    ``text_folder``): ``train/`` (and ``test/``) subfolders give the dataset its own test split."""
    root = _resolve(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if (root / "train").is_dir():
        return root / "train", (root / "test" if (root / "test").is_dir() else None)
    return root, None


def _is_integral(y: np.ndarray) -> bool:
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return True
    return bool(np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all())


def auto_task(y: np.ndarray) -> Literal["classification", "regression"]:
    """The task ``task: auto`` picks for targets ``y`` (all rows, including an own test split).

    Classification when the targets are not numbers (strings, booleans), or when they are whole numbers
    with at most 50 distinct values and no more distinct values than max(10, 5 % of the rows): a 0/1 or
    0..9 column is a class label, a column of counts or years with hundreds of values is a quantity.
    Everything else, and any target with several columns, is regression. Set ``task`` to override.
    """
    if y.ndim != 1:
        return "regression"
    if not np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        return "classification"
    if not _is_integral(y):
        return "regression"
    n_unique = len(np.unique(y))
    limit = min(MAX_AUTO_CLASSES, max(MIN_AUTO_CLASSES, int(AUTO_CLASS_SHARE * len(y))))
    return "classification" if n_unique <= limit else "regression"


def _targets(where: str, task: TaskKnob, y: np.ndarray, y_test: np.ndarray | None = None):
    """Resolve the task and encode targets: class indices (sorted labels), float32 values or multi-label 0/1
    float32 (N, K) (``task: multilabel``, or ``auto`` for several 0/1 columns that are not all one-hot).

    Returns ``(task, y, y_test, class_names)``.
    """
    both = y if y_test is None else np.concatenate([y, y_test])
    if task == "multilabel" or (task == "auto" and _looks_multilabel(both)):
        return ("multilabel", _indicators(where, y), None if y_test is None else _indicators(where, y_test),
                [str(k) for k in range(both.shape[1])] if both.ndim == 2 else None)
    if task == "auto":
        task = auto_task(both)
    numeric = np.issubdtype(both.dtype, np.number) or both.dtype == bool
    if task == "regression":
        bad = None if numeric else next((v for v in both.ravel() if not _is_number(v)), None)
        if bad is not None:
            raise DataError(f"{where}: task regression needs numeric targets, found {str(bad)!r}; "
                            "use task: classification for class labels")
        cast = lambda a: None if a is None else a.astype(np.float32)  # noqa: E731
        return task, cast(y), cast(y_test), None
    if both.ndim == 2 and numeric and np.isin(both, (0, 1)).all() and (both.sum(axis=1) == 1).all():
        # one-hot rows: their column is the class index
        classes = np.arange(both.shape[1])
        to_idx = lambda a: None if a is None else a.argmax(axis=1).astype(np.int64)  # noqa: E731
        return task, to_idx(y), to_idx(y_test), [str(c) for c in classes]
    if both.ndim != 1:
        raise DataError(f"{where}: classification targets must be one label per sample, got shape "
                        f"{tuple(both.shape)}")
    if numeric and not _is_integral(both):
        raise DataError(f"{where}: task classification needs whole-number or text labels, but the targets "
                        "have fractional or NaN values; use task: regression")
    classes = np.unique(both)
    to_idx = lambda a: None if a is None else np.searchsorted(classes, a).astype(np.int64)  # noqa: E731
    names = [str(int(c)) if numeric else str(c) for c in classes]
    return task, to_idx(y), to_idx(y_test), names


def _looks_multilabel(y: np.ndarray) -> bool:
    """``task: auto`` on an array target: several columns of 0/1 values whose rows are not all one-hot."""
    if y.ndim != 2 or y.shape[1] < 2 or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        return False
    return bool(np.isin(y, (0, 1)).all() and not (y.sum(axis=1) == 1).all())


def _indicators(where: str, y: np.ndarray) -> np.ndarray:
    """Multi-label targets (N, K) of 0/1 as float32; a DataError naming the first other value."""
    if y.ndim != 2 or y.shape[1] < 2:
        raise DataError(f"{where}: task multilabel needs 0/1 targets of shape (N, K) with K >= 2 labels, got shape "
                        f"{tuple(y.shape)}")
    ok = np.isin(y, (0, 1)) if (np.issubdtype(y.dtype, np.number) or y.dtype == bool) else np.zeros(y.shape, bool)
    if not ok.all():
        i, k = (int(v) for v in np.argwhere(~ok)[0])
        raise DataError(f"{where}: task multilabel needs 0/1 values; sample {i}, label {k} is {y[i, k].item()!r}")
    return y.astype(np.float32)


def _is_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _check_finite(where: str, a: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(a[idx]) else "infinite"
        raise DataError(f"{where}: {what} contains {int(bad.sum())} NaN/inf value(s); first {kind} at index "
                        f"{idx}. Clean or impute the data first.")


# --- feature columns of tabular files (csv, parquet): numbers, categories, missing cells ----------------


class EncodingKnobs(Knobs):
    """How a tabular file's feature columns are read and encoded (the ``TabularEncoder``)."""

    categorical: tuple[str, ...] = Field((), description="columns to treat as categories even if they hold "
                                         "numbers (text columns are categories anyway)")
    missing_values: tuple[str, ...] = Field(DEFAULT_MISSING, description="cells that count as missing "
                                            "(case-insensitive)")
    max_onehot: int = Field(16, ge=0, le=10000, description="categories with at most this many levels are "
                            "one-hot encoded, more get a learned embedding")
    embed_dim: int = Field(0, ge=0, le=1024, description="embedding width per category column (0: min(16, "
                           "round(1.6·n^0.56)) for n levels)")


def _fast_numbers(cells: list) -> np.ndarray | None:
    """The column as float64 when every cell is a finite number (the common case, vectorized), else None."""
    try:
        col = np.asarray(cells, dtype=object).astype(np.float64)
    except (TypeError, ValueError):
        return None
    return col if np.isfinite(col).all() else None


def _encoded_features(where: Path, features: list[str], cells: dict[str, list], knobs: EncodingKnobs,
                      line) -> tuple[np.ndarray, Featurizer] | None:
    """Raw cells (N, F) and an unfitted TabularEncoder when a feature column is categorical (text, or listed
    in ``categorical``) or has a missing cell; None for a file of plain finite numbers (the numeric path).
    ``line(i)`` names row ``i`` in messages (a CSV line number, a Parquet row)."""
    declared = set(knobs.categorical)
    stray = sorted(declared - set(features))
    if stray:
        raise DataError(f"{where}: categorical lists {', '.join(map(repr, stray))}, not feature column(s); "
                        f"features: {', '.join(features)}")
    markers = missing_markers(knobs.missing_values)
    types, plain = [], True
    for c in features:
        if c in declared:
            types.append("categorical")
            plain = False
        elif _fast_numbers(cells[c]) is not None:
            types.append("numeric")
        else:
            types.append(column_type(cells[c], markers))
            plain = False
    if plain:
        return None
    for c, kind in zip(features, types):
        if kind == "numeric":
            _check_numeric_cells(where, c, cells[c], markers, line)
    x = np.empty((len(cells[features[0]]), len(features)), dtype=object)
    for j, c in enumerate(features):
        x[:, j] = cells[c]
    return x, TabularEncoder(features, types, knobs.missing_values, knobs.max_onehot, knobs.embed_dim)


def _check_numeric_cells(where: Path, name: str, cells: list, markers: frozenset[str], line) -> None:
    for i, v in enumerate(cells):
        if not is_missing(v, markers) and not np.isfinite(float(v)):
            raise DataError(f"{where}: column {name!r} has the non-finite value {v!r} at {line(i)}; use a "
                            f"missing marker ({', '.join(map(repr, sorted(markers)))}) or a finite number")


# --- csv ------------------------------------------------------------------------------------------


class CSVKnobs(EncodingKnobs):
    path: str = Field(..., description="CSV file with a header row")
    target: str | tuple[str, ...] = Field(..., description="name of the target column; multi-label: one column "
                                         "of label lists, or a list of 0/1 columns, one per label")
    delimiter: str = Field(",", min_length=1, max_length=1, description="field separator, e.g. ';' or '\\t'")
    task: TaskKnob = Field("auto", description="auto: classification for text or few whole-number labels, "
                           "multilabel for several 0/1 target columns")
    features: tuple[str, ...] | None = Field(None, description="feature columns (default: all but target)")
    label_separator: str = Field(";", min_length=1, description="multi-label list column: separates the labels of "
                                 "a cell, e.g. 'a;c' (an empty cell: no label)")


def _read_csv(path: Path, delimiter: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows (cells stripped) and each row's line number in the file."""
    rows, lines = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = None
            for row in reader:
                if not "".join(row).strip():
                    continue  # blank lines, and rows of empty fields a spreadsheet leaves at the end
                if header is None:
                    header = [c.strip() for c in row]
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}: line {reader.line_num} has {len(row)} fields, the header has "
                                    f"{len(header)}; check the delimiter (now {delimiter!r}) and quoting")
                rows.append([c.strip() for c in row])
                lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from None
    if header is None:
        raise DataError(f"{path}: empty file (no header row)")
    if not rows:
        raise DataError(f"{path}: has a header but no data rows")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate column name(s) {', '.join(map(repr, dupes))}")
    return header, rows, lines


def _numeric_column(path: Path, name: str, cells: list[str], lines: list[int]) -> np.ndarray:
    try:
        col = np.asarray(cells).astype(np.float64)
    except ValueError:
        col = np.empty(len(cells))
        for i, c in enumerate(cells):
            if c.lower() in MISSING:
                col[i] = np.nan
                continue
            try:
                col[i] = float(c)
            except ValueError:
                raise DataError(
                    f"{path}: column {name!r} has a non-numeric value {c!r} at line {lines[i]}; encode "
                    "categories as numbers or leave the column out with `features: [...]`") from None
    bad = ~np.isfinite(col)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}: column {name!r} has a missing or non-finite value {cells[i]!r} at line "
                        f"{lines[i]} ({int(bad.sum())} such cell(s) in the column); fill or drop them first")
    return col


@DATASETS.register("csv", CSVKnobs, task="any", kind="tabular")
def csv_file(knobs: CSVKnobs) -> RawData:
    """A CSV file with a header row: feature columns (numbers, categories, missing cells) and one target column
    (labels or values). Categories and missing cells go through a TabularEncoder fitted on the training split."""
    path = _resolve(knobs.path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    header, rows, lines = _read_csv(path, knobs.delimiter)
    targets = [knobs.target] if isinstance(knobs.target, str) else list(knobs.target)
    for target in targets:
        if target not in header:
            hint = (f"; only one column was found: is the delimiter {knobs.delimiter!r} right?"
                    if len(header) == 1 else "")
            raise DataError(f"{path}: no target column {target!r}; columns: {', '.join(header)}{hint}")
    features = list(knobs.features) if knobs.features is not None else [c for c in header if c not in targets]
    missing = [c for c in features if c not in header]
    if missing:
        raise DataError(f"{path}: no feature column(s) {', '.join(map(repr, missing))}; columns: "
                        f"{', '.join(header)}")
    if set(targets) & set(features):
        raise DataError(f"{path}: the target column {sorted(set(targets) & set(features))[0]!r} is also listed in "
                        f"features")
    if not features:
        raise DataError(f"{path}: no feature columns besides the target {knobs.target!r}")
    columns = list(zip(*rows))
    encoded = _encoded_features(path, features, {c: list(columns[header.index(c)]) for c in features}, knobs,
                                lambda i: f"line {lines[i]}")
    if encoded is None:  # plain numbers: the numeric path, no featurizer
        x = np.stack([_numeric_column(path, c, list(columns[header.index(c)]), lines) for c in features], axis=1)
        x, featurizer = x.astype(np.float32), None
    else:
        x, featurizer = encoded
    multi = _csv_multilabel(path, knobs, targets, {c: list(columns[header.index(c)]) for c in targets}, lines)
    if multi is not None:
        y, names = multi
        return RawData(x, y, "multilabel", "tabular", class_names=names, source=str(path), feature_names=features,
                       featurizer=featurizer)

    target_cells = list(columns[header.index(knobs.target)])
    empty = [i for i, c in enumerate(target_cells) if c.lower() in MISSING]
    if empty:
        raise DataError(f"{path}: target column {knobs.target!r} has a missing value {target_cells[empty[0]]!r} "
                        f"at line {lines[empty[0]]} ({len(empty)} such cell(s)); drop those rows first")
    try:
        y = np.asarray(target_cells).astype(np.float64)
    except ValueError:
        y = np.asarray(target_cells)
    if y.dtype == np.float64:
        _check_finite(f"{path}: column {knobs.target!r}", y, "the target")
    task, y, _, names = _targets(f"{path}: column {knobs.target!r}", knobs.task, y)
    return RawData(x, y, task, "tabular", class_names=names, source=str(path), feature_names=features,
                   featurizer=featurizer)


# --- parquet --------------------------------------------------------------------------------------


class ParquetKnobs(EncodingKnobs):
    path: str = Field(..., description="Parquet file (read with pyarrow: pip install 'dnntune[parquet]')")
    target: str = Field(..., description="name of the target column")
    task: TaskKnob = Field("auto", description="auto: classification for text or few whole-number labels")
    features: tuple[str, ...] | None = Field(None, description="feature columns (default: all but target)")


def read_parquet(path: Path) -> dict[str, list]:
    """Column name → its cells as Python values (None for nulls), read with pyarrow; a DataError naming the
    file when pyarrow is not installed or the file is not Parquet."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet files needs pyarrow, which is not installed; install it with "
                        "pip install 'dnntune[parquet]'") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...; each becomes one message
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {str(e)[:200]})") from None
    dupes = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate column name(s) {', '.join(map(repr, dupes))}")
    if table.num_rows == 0:
        raise DataError(f"{path}: has no data rows")
    return {name: table.column(name).to_pylist() for name in table.column_names}


@DATASETS.register("parquet", ParquetKnobs, task="any", kind="tabular")
def parquet_file(knobs: ParquetKnobs) -> RawData:
    """A Parquet file: feature columns (numbers, categories, missing cells) and one target column, read as the
    csv dataset reads its cells (needs pyarrow)."""
    path = _resolve(knobs.path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    columns = read_parquet(path)
    header = list(columns)
    if knobs.target not in header:
        raise DataError(f"{path}: no target column {knobs.target!r}; columns: {', '.join(header)}")
    features = list(knobs.features) if knobs.features is not None else [c for c in header if c != knobs.target]
    missing = [c for c in features if c not in header]
    if missing or knobs.target in features or not features:
        what = (f"no feature column(s) {', '.join(map(repr, missing))}" if missing else
                f"the target column {knobs.target!r} is also listed in features" if features else
                f"no feature columns besides the target {knobs.target!r}")
        raise DataError(f"{path}: {what}; columns: {', '.join(header)}")
    encoded = _encoded_features(path, features, columns, knobs, lambda i: f"row {i}")
    if encoded is None:
        x, featurizer = np.stack([np.asarray(columns[c], dtype=np.float64) for c in features], 1), None
        x = x.astype(np.float32)
    else:
        x, featurizer = encoded
    cells = columns[knobs.target]
    empty = [i for i, c in enumerate(cells) if c is None or (isinstance(c, str) and c.strip().lower() in MISSING)
             or (isinstance(c, float) and np.isnan(c))]
    if empty:
        raise DataError(f"{path}: target column {knobs.target!r} has a missing value at row {empty[0]} "
                        f"({len(empty)} such cell(s)); drop those rows first")
    y = np.asarray(cells)
    if y.dtype.kind in "iufb":
        y = y.astype(np.float64)
        _check_finite(f"{path}: column {knobs.target!r}", y, "the target")
    else:
        y = np.asarray([str(c) for c in cells])
    task, y, _, names = _targets(f"{path}: column {knobs.target!r}", knobs.task, y)
    return RawData(x, y, task, "tabular", class_names=names, source=str(path), feature_names=features,
                   featurizer=featurizer)


def _csv_multilabel(path: Path, knobs: CSVKnobs, targets: list[str], cells: dict[str, list[str]],
                    lines: list[int]) -> tuple[np.ndarray, list[str]] | None:
    """The multi-label targets of a CSV file and the label names, or None for a single-label target.

    Several target columns: one 0/1 column per label (named by its column), for ``task: multilabel`` or
    ``auto``. One target column with ``task: multilabel``: a list of labels per cell, split at
    ``label_separator`` (an empty cell has no label), the label names sorted.
    """
    if len(targets) > 1:
        if knobs.task not in ("auto", "multilabel"):
            raise DataError(f"{path}: several target columns ({', '.join(targets)}) are for task: multilabel (one 0/1 "
                            f"column per label), not {knobs.task}")
        return np.stack([_zero_one_column(path, c, cells[c], lines) for c in targets], axis=1), targets
    if knobs.task != "multilabel":
        return None
    return _label_lists(path, targets[0], cells[targets[0]], lines, knobs.label_separator)


def _zero_one_column(path: Path, name: str, cells: list[str], lines: list[int]) -> np.ndarray:
    """One label's 0/1 column (``0``/``1``, also ``0.0``/``1.0``, ``true``/``false``) as float32."""
    words = {"0": 0.0, "1": 1.0, "false": 0.0, "true": 1.0}
    out = np.empty(len(cells), np.float32)
    for i, c in enumerate(cells):
        v = words.get(c.lower())
        if v is None and _is_number(c) and float(c) in (0.0, 1.0):
            v = float(c)
        if v is None:
            raise DataError(f"{path}: multi-label target column {name!r} must hold 0 or 1, found {c!r} at line "
                            f"{lines[i]}")
        out[i] = v
    return out


def _label_lists(path: Path, name: str, cells: list[str], lines: list[int], sep: str):
    """A column of label lists (``a;c``, empty: none) → (N, K) 0/1 float32 and the sorted label names."""
    if all(c in ("0", "1") for c in cells):
        raise DataError(f"{path}: multi-label target {name!r} is one 0/1 column; multi-label needs several 0/1 "
                        f"columns (target: [a, b, ...]) or one column of label lists; one 0/1 label is task: "
                        f"classification")
    lists = [[t.strip() for t in c.split(sep)] if c else [] for c in cells]
    for i, labels in enumerate(lists):
        if any(t == "" for t in labels):
            raise DataError(f"{path}: column {name!r} has an empty label in {cells[i]!r} at line {lines[i]} (labels "
                            f"are separated by {sep!r}; an empty cell means no label)")
    names = sorted({t for labels in lists for t in labels})
    if len(names) < 2:
        found = f"only the label {names[0]!r}" if names else "no label at all"
        raise DataError(f"{path}: multi-label column {name!r} has {found}; multi-label needs at least 2 labels (is "
                        f"label_separator {sep!r} right? one label per row is task: classification)")
    index = {n: k for k, n in enumerate(names)}
    y = np.zeros((len(cells), len(names)), np.float32)
    for i, labels in enumerate(lists):
        y[i, [index[t] for t in labels]] = 1.0
    return y, names


# --- npz ------------------------------------------------------------------------------------------


class NPZKnobs(Knobs):
    path: str = Field(..., description="NumPy .npz file (np.savez)")
    x_key: str = Field("x", description="array of inputs: (N, F) tabular, (N, C, L) signal, (N, C, H, W) image")
    y_key: str = Field("y", description="array of targets: labels (N,), values (N,) / (N, K) or multi-label 0/1 "
                       "(N, K)")
    task: TaskKnob = Field("auto", description="auto: classification for text or few whole-number labels, "
                           "multilabel for several 0/1 target columns")


KIND_BY_RANK = {2: "tabular", 3: "signal", 4: "image"}


def _test_keys(x_key: str, y_key: str, keys: list[str]) -> tuple[str, str] | None:
    pairs = [(f"{x_key}_test", f"{y_key}_test")]
    if "train" in x_key and "train" in y_key:
        pairs.append((x_key.replace("train", "test"), y_key.replace("train", "test")))
    pairs.append(("x_test", "y_test"))
    for xk, yk in pairs:
        if xk in keys and yk in keys:
            return xk, yk
    return None


def _npz_inputs(path: Path, key: str, a: np.ndarray) -> np.ndarray:
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{path}: array {key!r} is not numeric (dtype {a.dtype})")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim not in KIND_BY_RANK:
        raise DataError(f"{path}: array {key!r} has shape {a.shape}; expected (N, F), (N, C, L) or (N, C, H, W)")
    scale = 1 / 255 if a.dtype == np.uint8 and a.ndim == 4 else 1  # 8-bit images to [0, 1], like idx
    out = a.astype(np.float32) * np.float32(scale)
    _check_finite(str(path), out, f"array {key!r}")
    return out


@DATASETS.register("npz", NPZKnobs, task="any", kind="any")
def npz_file(knobs: NPZKnobs) -> RawData:
    """A NumPy .npz file with inputs and targets (and optionally its own x_test / y_test split).

    The kind follows the rank of x: 2 → tabular, 3 → signal (N, C, L), 4 → image (N, C, H, W); a 1-D x is
    one feature. 8-bit (uint8) images are scaled to [0, 1].
    """
    path = _resolve(knobs.path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: holds a single array (a .npy file); save inputs and targets together "
                            "with np.savez(path, x=..., y=...)")
        with z:
            keys = list(z.files)
            absent = [k for k in (knobs.x_key, knobs.y_key) if k not in keys]
            if absent:
                raise DataError(f"{path}: no array(s) {', '.join(map(repr, absent))}; arrays in the file: "
                                f"{', '.join(keys) or 'none'} (set x_key / y_key)")
            test = _test_keys(knobs.x_key, knobs.y_key, keys)
            arrays = {k: z[k] for k in (knobs.x_key, knobs.y_key, *(test or ()))}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    except ValueError as e:  # object arrays need pickle, which we refuse for safety
        raise DataError(f"{path}: cannot read ({e}); save plain numeric or string arrays") from None

    def pair(xk: str, yk: str):
        x, y = arrays[xk], arrays[yk]
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise DataError(f"{path}: {xk!r} has {len(x) if x.ndim else 0} samples but {yk!r} has "
                            f"{len(y) if y.ndim else 0}; they must match")
        return _npz_inputs(path, xk, x), y

    x, y = pair(knobs.x_key, knobs.y_key)
    x_test = y_test = None
    if test is not None:
        x_test, y_test = pair(*test)
        for (k, a), (kt, at) in (((knobs.x_key, x), (test[0], x_test)), ((knobs.y_key, y), (test[1], y_test))):
            if a.shape[1:] != at.shape[1:]:
                raise DataError(f"{path}: {kt!r} samples have shape {at.shape[1:]} but {k!r} samples have "
                                f"{a.shape[1:]}")
    task, y, y_test, names = _targets(f"{path}: array {knobs.y_key!r}", knobs.task, y, y_test)
    if task == "regression":
        _check_finite(str(path), y, f"array {knobs.y_key!r}")
        if y_test is not None:
            _check_finite(str(path), y_test, f"array {test[1]!r}")
    return RawData(x, y, task, KIND_BY_RANK[x.ndim], x_test=x_test, y_test=y_test, class_names=names,
                   source=str(path))
