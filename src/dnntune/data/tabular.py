"""Tabular rows with categories and missing values → numeric model inputs, learned on the training split only.

:class:`TabularEncoder` is the :class:`~dnntune.data.core.Featurizer` of the ``csv`` and ``parquet`` datasets
when a file has a categorical column or a missing cell (files of plain numbers keep the plain numeric path).
Its raw inputs are rows of cells (an object array (N, F) in the order of ``columns``): strings as read from a
CSV file, numbers, ``None``; a cell is *missing* when it is ``None``, a float NaN, or a string in the
``missing_values`` list (compared case-insensitively, after stripping).

What :meth:`TabularEncoder.fit` learns from the training split, per column, and what :meth:`transform` emits:

- numeric: the median of the training values; a missing cell becomes that median. A column that had missing
  cells *in the training split* also gets a missing-indicator feature (1 where the cell was missing). A column
  with missing cells only outside the training split is imputed the same way, without an indicator (the model
  never saw one).
- categorical: the levels of the training split (sorted), plus an own *missing* level when the training split
  had missing cells. With at most ``max_onehot`` levels: one 0/1 feature per level (and one for *missing*); a
  level not seen in training (and a missing cell when training had none) is the *unknown* slot: all of them 0.
  With more levels: one integer index feature for a learned embedding (``nn.Embedding`` in the ``mlp`` and
  ``linear`` families): 0 is the unknown slot (a fixed zero vector, ``padding_idx=0``), 1..n the training
  levels, n + 1 the missing level.

Numeric features are standardized by ``data.normalize`` (training statistics); indicators, one-hot and index
features are not (:meth:`normalize_mask`). Everything is saved in ``preprocess.json`` (no extra files), so
``predict`` and ``serve`` encode new rows exactly as training did.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from ..errors import DataError
from .core import Featurizer, register_featurizer

ColumnType = Literal["numeric", "categorical"]
DEFAULT_MISSING = ("", "?", "NA", "N/A", "NaN", "null", "None")
MAX_EMBED_DIM = 16


def embedding_size(cardinality: int) -> int:
    """The rule of thumb for an embedding's width (``embed_dim: 0``): min(16, round(1.6 · n^0.56)).

    >>> [embedding_size(n) for n in (3, 20, 100, 10000)]
    [3, 9, 16, 16]
    """
    return max(1, min(MAX_EMBED_DIM, round(1.6 * cardinality ** 0.56)))


def is_missing(v: Any, markers: frozenset[str]) -> bool:
    """A cell counts as missing: None, a float NaN, or a string in ``markers`` (lower case, stripped)."""
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip().lower() in markers
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def as_number(v: Any) -> float | None:
    """The cell as a float (booleans as 1 / 0, as a Parquet bool column reads), or None if it is not a number."""
    if isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def level_key(v: Any) -> str:
    """A category cell as its level name: text stripped, whole numbers without a decimal point (``3.0`` and
    ``"3"`` are the same level, so a JSON request matches the CSV file it was trained on)."""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def missing_markers(values) -> frozenset[str]:
    return frozenset(str(m).strip().lower() for m in values)


def column_type(cells, markers: frozenset[str]) -> ColumnType:
    """Numeric when every cell that is not missing is a number, else categorical."""
    for v in cells:
        if not is_missing(v, markers) and as_number(v) is None:
            return "categorical"
    return "numeric"


@register_featurizer
class TabularEncoder(Featurizer):
    """Median imputation with missing indicators, one-hot or embedded categories; see the module docstring.

    Example:
        >>> rows = np.array([["1.5", "east"], ["", "west"], ["2.5", "east"], ["4", "?"]], dtype=object)
        >>> enc = TabularEncoder(["size", "region"], ["numeric", "categorical"]).fit(rows, None)
        >>> enc.feature_names_out()
        ['size', 'size=missing', 'region=east', 'region=west', 'region=missing']
        >>> enc.transform(np.array([["", "north"]], dtype=object)).tolist()  # median 2.5; north: unknown
        [[2.5, 1.0, 0.0, 0.0, 0.0]]
    """

    type = "tabular"

    def __init__(self, columns: list[str], types: list[ColumnType], missing_values=DEFAULT_MISSING,
                 max_onehot: int = 16, embed_dim: int = 0, fitted: list[dict] | None = None):
        if len(columns) != len(types):
            raise ValueError("one type per column")
        self.columns, self.types = [str(c) for c in columns], list(types)
        self.missing_values = [str(m) for m in missing_values]
        self.max_onehot, self.embed_dim = int(max_onehot), int(embed_dim)
        self.fitted = fitted  # per column: what fit() learned (None: not fitted)
        self._markers = missing_markers(self.missing_values)

    # --- learning ---------------------------------------------------------------------------------------
    def fit(self, x_train: Any, y_train: Any = None) -> TabularEncoder:
        """A fitted copy: medians, indicators, levels and encodings from the training rows only."""
        x = self._rows(x_train)
        fitted = []
        for j, (name, kind) in enumerate(zip(self.columns, self.types)):
            cells = x[:, j]
            if kind == "numeric":
                values = self._numbers(cells, name)
                seen = values[~np.isnan(values)]
                fitted.append({"median": float(np.median(seen)) if len(seen) else 0.0,
                               "indicator": bool(len(seen) < len(values))})
                continue
            keys = [None if is_missing(v, self._markers) else level_key(v) for v in cells]
            levels = sorted({k for k in keys if k is not None})
            entry = {"levels": levels, "missing_level": any(k is None for k in keys),
                     "encoding": "onehot" if len(levels) <= self.max_onehot else "embedding"}
            if entry["encoding"] == "embedding":
                entry["dim"] = self.embed_dim or embedding_size(self._cardinality(entry))
            fitted.append(entry)
        return TabularEncoder(self.columns, self.types, self.missing_values, self.max_onehot, self.embed_dim, fitted)

    @staticmethod
    def _cardinality(entry: dict) -> int:
        """Embedding rows: unknown (0), the levels, and the missing level if training had one."""
        return 1 + len(entry["levels"]) + int(entry["missing_level"])

    # --- applying ---------------------------------------------------------------------------------------
    def transform(self, x: Any) -> np.ndarray:
        """Rows of raw cells (N, F) → float32 features (N, n_features_out); a DataError names a bad column."""
        if self.fitted is None:
            raise RuntimeError("TabularEncoder.transform before fit")
        rows = self._rows(x)
        parts = []
        for j, (name, kind, fit) in enumerate(zip(self.columns, self.types, self.fitted)):
            cells = rows[:, j]
            if kind == "numeric":
                values = self._numbers(cells, name)
                miss = np.isnan(values)
                parts.append(np.where(miss, fit["median"], values)[:, None])
                if fit["indicator"]:
                    parts.append(miss[:, None].astype(np.float64))
                continue
            codes = self._codes(cells, fit)  # 0 unknown, 1..n levels, n + 1 missing
            if fit["encoding"] == "embedding":
                parts.append(codes[:, None].astype(np.float64))
            else:
                width = len(fit["levels"]) + int(fit["missing_level"])
                onehot = np.zeros((len(codes), width + 1))
                onehot[np.arange(len(codes)), codes] = 1.0
                parts.append(onehot[:, 1:])  # column 0 (unknown) dropped: unknown is all zeros
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(rows), 0), np.float32)

    def _codes(self, cells, fit: dict) -> np.ndarray:
        index = {level: i + 1 for i, level in enumerate(fit["levels"])}
        missing = len(fit["levels"]) + 1 if fit["missing_level"] else 0
        return np.array([missing if is_missing(v, self._markers) else index.get(level_key(v), 0) for v in cells],
                        dtype=np.int64)

    def _rows(self, x: Any) -> np.ndarray:
        a = np.asarray(x, dtype=object)
        if a.ndim != 2 or a.shape[1] != len(self.columns):
            got = tuple(a.shape)
            hint = "; one row: add a batch dimension" if got == (len(self.columns),) else ""
            raise DataError(f"inputs: expected rows of the {len(self.columns)} raw columns "
                            f"{', '.join(self.columns)}, got shape {got}{hint}")
        return a

    def _numbers(self, cells, name: str) -> np.ndarray:
        out = np.empty(len(cells))
        for i, v in enumerate(cells):
            if is_missing(v, self._markers):
                out[i] = np.nan
                continue
            f = as_number(v)
            if f is None:
                raise DataError(f"column {name!r}: was numeric in training, but row {i} holds the text "
                                f"{str(v)[:40]!r}; pass a number or a missing marker "
                                f"({', '.join(map(repr, self.missing_values))})")
            if not math.isfinite(f):
                raise DataError(f"column {name!r}: row {i} holds the non-finite value {str(v)[:40]!r}")
            out[i] = f
        return out

    # --- what the model and the trainer need ------------------------------------------------------------
    def feature_names_out(self) -> list[str]:
        """The name of each output feature: ``col``, ``col=missing`` (indicator or level), ``col=level``,
        ``col#index`` (an embedding's index)."""
        names = []
        for name, kind, fit in zip(self.columns, self.types, self.fitted or []):
            if kind == "numeric":
                names += [name] + ([f"{name}=missing"] if fit["indicator"] else [])
            elif fit["encoding"] == "embedding":
                names.append(f"{name}#index")
            else:
                names += [f"{name}={level}" for level in fit["levels"]] + (
                    [f"{name}=missing"] if fit["missing_level"] else [])
        return names

    def normalize_mask(self) -> np.ndarray:
        """Standardize the numeric values only: indicators, one-hot and index features stay as they are."""
        mask = []
        for kind, fit in zip(self.types, self.fitted or []):
            if kind == "numeric":
                mask += [True] + ([False] if fit["indicator"] else [])
            elif fit["encoding"] == "embedding":
                mask.append(False)
            else:
                mask += [False] * (len(fit["levels"]) + int(fit["missing_level"]))
        return np.array(mask, dtype=bool)

    def input_info(self) -> dict[str, Any]:
        """``embeddings``: per index feature its position, column, cardinality (rows, unknown included) and
        width; ``features``: the output feature names; ``columns``: the raw columns and their types."""
        embeddings, pos = [], 0
        for name, fit, out in zip(self.columns, self.fitted or [], self._widths()):
            if fit.get("encoding") == "embedding":
                embeddings.append({"index": pos, "column": name, "cardinality": self._cardinality(fit),
                                   "dim": int(fit["dim"])})
            pos += out
        return {"embeddings": embeddings, "features": self.feature_names_out(),
                "columns": dict(zip(self.columns, self.types))}

    def _widths(self) -> list[int]:
        out = []
        for kind, fit in zip(self.types, self.fitted or []):
            if kind == "numeric":
                out.append(1 + int(fit["indicator"]))
            elif fit["encoding"] == "embedding":
                out.append(1)
            else:
                out.append(len(fit["levels"]) + int(fit["missing_level"]))
        return out

    def categorical_columns(self) -> list[str]:
        return [c for c, t in zip(self.columns, self.types) if t == "categorical"]

    # --- saving -----------------------------------------------------------------------------------------
    def to_state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        return ({"columns": self.columns, "types": self.types, "missing_values": self.missing_values,
                 "max_onehot": self.max_onehot, "embed_dim": self.embed_dim, "fitted": self.fitted}, {})

    @classmethod
    def from_state(cls, state: dict[str, Any], files: dict[str, bytes]) -> TabularEncoder:
        try:
            columns, types, fitted = list(state["columns"]), list(state["types"]), list(state["fitted"])
            if len(fitted) != len(columns) or not set(types) <= {"numeric", "categorical"}:
                raise ValueError("columns, types and fitted do not match")
            return cls(columns, types, state.get("missing_values", DEFAULT_MISSING), int(state["max_onehot"]),
                       int(state["embed_dim"]), fitted)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"preprocess.json: the tabular encoder's state is malformed ({e})") from None
