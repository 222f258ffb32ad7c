"""Inputs to predict, read from the file formats dnntune trains from, in the units training saw.

:func:`read_inputs` turns a CSV file, an ``.npz`` or ``.npy`` array, an MNIST IDX file, image files or a
folder of images into raw inputs of shape (N, *input_shape) for ``LoadedRun.predict`` (which normalizes
them as training did), with an id per sample. Each format is converted by the training loader's own rules:
CSV columns are picked by the feature names the run recorded, images are resized and converted to grey or
RGB by the ``image_folder`` loader's function, 8-bit pixels are scaled to [0, 1] with the same arithmetic as
the loader the run trained from. Every error is a :class:`~dnntune.errors.DataError` naming the file and
what is expected.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.files import IMAGE_SUFFIXES, _check_finite, _is_number, _npz_inputs, _numeric_column, _read_csv
from ..data.image_files import IDX_DTYPES, _load_images, read_idx
from ..errors import DataError

if TYPE_CHECKING:
    from ..config import Recipe
    from ..data.preprocess import Preprocessing

FORMATS = "a CSV file (.csv, .tsv), a Parquet file (.parquet), an .npz or .npy array, an MNIST IDX file " \
          "(...-ubyte[.gz]), image files " \
          f"({', '.join(sorted(IMAGE_SUFFIXES))}) or a folder of images"
# datasets whose loaders read 8-bit pixels as value / 255 (npz: value * (1 / 255), see _units)
_EIGHT_BIT = ("npz", "idx", "image_folder")


@dataclass
class Inputs:
    """What :func:`read_inputs` returns.

    Attributes:
        x: raw inputs (N, *input_shape), float32, in the units the run's dataset loader produces; for a run
            with a tabular encoder (categories, missing values) the raw cells (N, F) as an object array, in the
            order of ``feature_names``, which ``predict`` encodes; for text runs a 1-D object array of the raw
            texts.
        ids: one id per sample: the row number (from 0) for CSV and arrays, the file name (relative to the
            folder) for images.
        source: the file or folder read.
        format: ``csv``, ``npz``, ``npy``, ``idx``, ``image`` or ``text`` (.txt files).
    """

    x: np.ndarray
    ids: list[str]
    source: str
    format: str

    def __len__(self) -> int:
        return len(self.x)


def read_inputs(path: str | Path | list, preprocessing: Preprocessing, recipe: Recipe | None = None,
                key: str | None = None) -> Inputs:
    """Read the inputs to predict from a file or folder, converted as the run's training data was.

    Args:
        path: a CSV file (a tabular run's feature columns by name, in any order; other columns such as the
            target are ignored), an ``.npz`` file (the array ``key``; default the training ``x_key`` for npz
            runs, else ``x``, else the file's only array), an ``.npy`` array, an MNIST IDX images file, an
            image file, a folder of images (searched into subfolders), or a list of image files.
        preprocessing: the run's preprocessing (``LoadedRun.preprocessing``): the input shape, the feature
            names, the dataset the run trained on.
        recipe: the run's recipe, if at hand: the CSV delimiter, the npz array name and the image size of
            the training data come from its ``data:`` section (else ``,``, ``x`` and the input shape).
        key: the array to read from an ``.npz`` file.

    Returns:
        Inputs: ``x`` (N, *input_shape) in raw units, ``ids``, ``source`` and ``format``.

    Raises:
        DataError: the path does not exist, its format is not one of the above or does not fit the run
            (e.g. a CSV file for an image model), a feature column is missing, or the samples have the
            wrong shape; the message names the file and what is expected.

    Example:
        >>> import tempfile, pathlib
        >>> from dnntune.data.preprocess import Preprocessing
        >>> p = Preprocessing("toy", "classification", "tabular", (2,), 2, feature_names=["a", "b"])
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "new.csv"
        >>> _ = f.write_text("b,label,a\\n2,yes,1\\n4,no,3\\n")
        >>> read_inputs(f, p).x
        array([[1., 2.],
               [3., 4.]], dtype=float32)
    """
    paths = [Path(p).expanduser() for p in (path if isinstance(path, (list, tuple)) else [path])]
    if not paths:
        raise DataError("inputs: no file given")
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
    if preprocessing.kind == "sequence":  # a text run: raw texts, which its saved tokenizer encodes
        return _texts(paths, recipe)
    if len(paths) > 1:
        not_images = [str(p) for p in paths if p.is_dir() or input_format(p) != "image"]
        if not_images:
            raise DataError(f"{not_images[0]}: several inputs must all be image files; pass other formats one "
                            "at a time")
        return _fit(_images(paths, [p.name for p in paths], preprocessing, recipe, str(paths[0])), preprocessing)
    p = paths[0]
    if p.is_dir():
        return _fit(_image_folder(p, preprocessing, recipe), preprocessing)
    fmt = input_format(p)
    if fmt is None:
        raise DataError(f"{p}: not a format dnntune predicts from (suffix {p.suffix or 'none'!r}); pass {FORMATS}")
    if fmt == "csv":
        inputs = _csv(p, preprocessing, recipe)
    elif fmt == "parquet":
        inputs = _parquet(p, preprocessing)
    elif fmt in ("npz", "npy"):
        inputs = _array_file(p, fmt, preprocessing, recipe, key)
    elif fmt == "idx":
        inputs = _idx(p, preprocessing)
    else:
        inputs = _images([p], [p.name], preprocessing, recipe, str(p))
    return _fit(inputs, preprocessing)


def input_format(path: Path) -> str | None:
    """The format of an input file: by its suffix, else by its first bytes; None if not one dnntune reads."""
    name, suffix = path.name.lower(), path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".npz", ".npy"):
        return suffix[1:]
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if "ubyte" in name or ".idx" in name:
        return "idx"
    try:
        with path.open("rb") as f:
            head = f.read(6)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    if head.startswith(b"\x1f\x8b") or (len(head) >= 4 and head[:2] == b"\0\0" and head[2] in IDX_DTYPES):
        return "idx"
    return None


# --- shape and units ----------------------------------------------------------------------------------


def _fit(inputs: Inputs, pre: Preprocessing) -> Inputs:
    """Check the samples' shape and values."""
    x = inputs.x
    where = inputs.source
    if len(x) == 0:
        raise DataError(f"{where}: no samples to predict")
    if pre.featurizer is not None and x.dtype == object:  # raw cells: checked by the run's encoder
        return inputs
    want = tuple(pre.input_shape)
    if x.shape[1:] != want:
        got = tuple(int(s) for s in x.shape)
        hint = (f"; reshape to (N, {', '.join(map(str, want))})"
                if x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(np.prod(want)) else "")
        raise DataError(f"{where}: samples of shape {got[1:]} (array {got}); the run expects "
                        f"{pre.describe_input()}{hint}")
    _check_finite(where, x, "the input data")
    inputs.x = np.ascontiguousarray(x, dtype=np.float32)
    return inputs


def _units(a: np.ndarray, pre: Preprocessing, path: Path, key: str) -> np.ndarray:
    """An array in the units of the run's dataset: 8-bit images scaled by the loader the run trained from."""
    want = tuple(pre.input_shape)
    if a.ndim == len(want) and want[0] == 1 and a.shape[1:] == want[1:]:
        a = a[:, None]  # (N, L) signals, (N, H, W) images, (N,) one feature: the size-1 axis added
    if pre.dataset == "npz":  # exactly the npz loader's conversion
        return _npz_inputs(path, key, a)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"{path}: array {key!r} is not numeric (dtype {a.dtype})")
    x = a.astype(np.float32)
    if a.dtype == np.uint8 and a.ndim == 4 and pre.dataset in _EIGHT_BIT:
        x /= 255.0  # as the idx and image_folder loaders
    return x


# --- the formats --------------------------------------------------------------------------------------


def _csv(path: Path, pre: Preprocessing, recipe: Recipe | None) -> Inputs:
    if pre.kind != "tabular":
        raise DataError(f"{path}: a CSV file holds tabular rows, but the run expects {pre.describe_input()}; "
                        f"pass an .npz or .npy array{' or image files' if pre.kind == 'image' else ''}")
    knobs = recipe.data.knobs if recipe is not None and recipe.data.name == "csv" else None
    delimiter = knobs.delimiter if knobs is not None else "\t" if path.suffix.lower() == ".tsv" else ","
    header, rows, lines = _read_csv(path, delimiter)
    names = pre.feature_names
    if names is None:  # trained on data without column names: all columns, in order
        if all(_is_number(c) for c in header):  # no header row
            rows, lines = [header, *rows], [lines[0] - 1, *lines]
            header = [f"column {i + 1}" for i in range(len(header))]
        if len(header) != pre.input_shape[0]:
            raise DataError(f"{path}: {len(header)} columns, but the run expects {pre.describe_input()}; its "
                            f"dataset ({pre.dataset}) has no column names, so the CSV must hold exactly its "
                            f"{pre.input_shape[0]} features in the training order")
        names = header
    missing = [c for c in names if c not in header]
    if missing:
        raise DataError(f"{path}: missing feature column(s) {', '.join(map(repr, missing))}; the run was "
                        f"trained on the columns {', '.join(names)} (any order; other columns are ignored)")
    columns = list(zip(*rows))
    if pre.featurizer is not None:  # raw cells: the run's encoder (fitted in training) encodes them
        return _raw_cells(str(path), {c: list(columns[header.index(c)]) for c in names}, names, pre,
                          lambda i: f"line {lines[i]}", "csv")
    x = np.stack([_numeric_column(path, c, list(columns[header.index(c)]), lines) for c in names], axis=1)
    return Inputs(x.astype(np.float32), [str(i) for i in range(len(x))], str(path), "csv")  # as the csv loader


def _raw_cells(where: str, cells: dict[str, list], names: list[str], pre: Preprocessing, line, fmt: str) -> Inputs:
    """Rows of raw cells (N, F) in the training column order, for a run whose encoder reads them; a column
    that was numeric in training but holds text now is a DataError naming the column and its line."""
    from ..data.tabular import as_number, is_missing, missing_markers

    enc = pre.featurizer
    types = dict(zip(getattr(enc, "columns", []), getattr(enc, "types", [])))
    markers = missing_markers(getattr(enc, "missing_values", ()))
    for c in names:
        if types.get(c) != "numeric":
            continue
        bad = next((i for i, v in enumerate(cells[c]) if not is_missing(v, markers) and as_number(v) is None), None)
        if bad is not None:
            raise DataError(f"{where}: column {c!r} was numeric in training, but holds the text {cells[c][bad]!r} "
                            f"at {line(bad)}; the run encodes it as a number (missing cells: "
                            f"{', '.join(map(repr, enc.missing_values))})")
    x = np.empty((len(cells[names[0]]), len(names)), dtype=object)
    for j, c in enumerate(names):
        x[:, j] = cells[c]
    return Inputs(x, [str(i) for i in range(len(x))], where, fmt)


def _parquet(path: Path, pre: Preprocessing) -> Inputs:
    """A Parquet file's feature columns by name, read as the parquet dataset reads them."""
    from ..data.files import read_parquet

    if pre.kind != "tabular" or pre.feature_names is None:
        raise DataError(f"{path}: a Parquet file holds named tabular columns, but the run expects "
                        f"{pre.describe_input()} without column names; pass an .npz or .npy array")
    columns, names = read_parquet(path), pre.feature_names
    missing = [c for c in names if c not in columns]
    if missing:
        raise DataError(f"{path}: missing feature column(s) {', '.join(map(repr, missing))}; the run was "
                        f"trained on the columns {', '.join(names)} (any order; other columns are ignored)")
    if pre.featurizer is not None:
        return _raw_cells(str(path), {c: columns[c] for c in names}, names, pre, lambda i: f"row {i}", "parquet")
    try:
        x = np.stack([np.asarray(columns[c], dtype=np.float64) for c in names], axis=1)
    except (TypeError, ValueError):
        bad = next(c for c in names if any(not isinstance(v, (int, float)) or isinstance(v, bool)
                                           for v in columns[c]))
        raise DataError(f"{path}: column {bad!r} holds values that are not numbers; the run was trained on "
                        "numeric columns") from None
    return Inputs(x.astype(np.float32), [str(i) for i in range(len(x))], str(path), "parquet")


def _array_file(path: Path, fmt: str, pre: Preprocessing, recipe: Recipe | None, key: str | None) -> Inputs:
    try:
        with path.open("rb") as f:
            head = f.read(6)
        if not head.startswith((b"PK\x03\x04", b"\x93NUMPY")):  # else np.load tries pickle and says so
            raise DataError(f"{path}: not a readable .{fmt} file (neither an np.savez archive nor an np.save array)")
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .{fmt} file ({e})") from None
    except ValueError as e:  # object arrays need pickle, which we refuse for safety
        raise DataError(f"{path}: cannot read ({e}); save plain numeric arrays") from None
    if isinstance(z, np.lib.npyio.NpzFile):
        with z:
            key = _npz_key(path, list(z.files), pre, recipe, key)
            try:
                a = z[key]
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
                raise DataError(f"{path}: array {key!r} cannot be read ({e})") from None
    elif key is not None:
        raise DataError(f"{path}: holds a single array (a .npy file); key {key!r} is for .npz files")
    else:
        a = z
    where = f"{path} (array {key!r})" if fmt == "npz" else str(path)
    if a.ndim == 0:
        raise DataError(f"{where}: a single number; expected samples of shape {pre.describe_input()}")
    return Inputs(_units(a, pre, path, key or path.name), [str(i) for i in range(len(a))], where, fmt)


def _npz_key(path: Path, keys: list[str], pre: Preprocessing, recipe: Recipe | None, key: str | None) -> str:
    """The array to read: ``key``, else the training ``x_key`` (npz runs) or ``x``, else the only array."""
    if key is not None:
        if key not in keys:
            raise DataError(f"{path}: no array {key!r}; arrays in the file: {', '.join(keys) or 'none'}")
        return key
    default = recipe.data.knobs.x_key if recipe is not None and recipe.data.name == "npz" else "x"
    if default in keys:
        return default
    if len(keys) == 1:
        return keys[0]
    raise DataError(f"{path}: no array {default!r} and {len(keys)} arrays ({', '.join(keys) or 'none'}); name "
                    "the one holding the inputs (--key)")


def _idx(path: Path, pre: Preprocessing) -> Inputs:
    images = read_idx(path)
    if images.ndim != 3:
        what = "labels" if images.ndim == 1 else f"an array of shape {images.shape}"
        raise DataError(f"{path}: holds {what}, not images (N, H, W); pass an images file such as "
                        "t10k-images-idx3-ubyte")
    x = images[:, None].astype(np.float32)  # exactly as the idx loader
    if images.dtype == np.uint8:
        x /= 255.0
    return Inputs(x, [str(i) for i in range(len(x))], str(path), "idx")


def _image_folder(folder: Path, pre: Preprocessing, recipe: Recipe | None) -> Inputs:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        idx = [p.name for p in sorted(folder.iterdir()) if p.is_file() and input_format(p) == "idx"]
        hint = f"; for MNIST IDX files pass one of them, e.g. {folder / idx[0]}" if idx else ""
        raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder or its "
                        f"subfolders{hint}")
    return _images(files, [p.relative_to(folder).as_posix() for p in files], pre, recipe, str(folder))


def _images(files: list[Path], ids: list[str], pre: Preprocessing, recipe: Recipe | None, where: str) -> Inputs:
    """Image files loaded by the image_folder loader's own function, at the run's size and colour mode."""
    shape = tuple(pre.input_shape)
    if pre.dataset not in ("image_folder", "idx") or len(shape) != 3 or shape[0] not in (1, 3) \
            or shape[1] != shape[2]:
        raise DataError(f"{where}: image files are read as the image_folder loader reads them (square, pixels / "
                        f"255), but the run trained on {pre.dataset}, {pre.describe_input()}, in that dataset's own "
                        "units: pass an .npz or .npy array of raw inputs")
    if recipe is not None and recipe.data.name == "image_folder":
        size, grayscale = recipe.data.knobs.size, recipe.data.knobs.grayscale
    else:  # idx (grey), or no recipe at hand: the input shape is (1 or 3, size, size)
        size, grayscale = shape[1], shape[0] == 1
    x = _load_images([(f, "") for f in files], size, grayscale)
    return Inputs(x, list(ids), where, "image")


# --- text ---------------------------------------------------------------------------------------------


def _texts(paths: list[Path], recipe: Recipe | None) -> Inputs:
    """The raw texts to predict for a text run: a CSV file's text column(s) (named as in training, default
    ``text``; other columns such as the label are ignored), ``.txt`` files (one text each), or a folder of
    ``.txt`` files (searched into subfolders, e.g. a ``text_folder`` layout). ``x`` is a 1-D object array of
    strings; ``LoadedRun.predict`` tokenizes them with the run's tokenizer."""
    from ..data.text import _read_txt, texts_of

    knobs = recipe.data.knobs if recipe is not None and recipe.data.name == "text_csv" else None
    if len(paths) == 1 and paths[0].is_file() and input_format(paths[0]) == "csv":
        p = paths[0]
        delimiter = knobs.delimiter if knobs is not None else "\t" if p.suffix.lower() == ".tsv" else ","
        texts = texts_of(p, knobs.text if knobs is not None else "text", delimiter)
        return _text_inputs(texts, [str(i) for i in range(len(texts))], str(p), "csv")
    files: list[tuple[Path, str]] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.txt") if f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise DataError(f"{p}: no .txt files in the folder or its subfolders; a text run predicts texts "
                                "from a CSV file (its text column), .txt files or a folder of them")
            files += [(f, f.relative_to(p).as_posix()) for f in found]
        elif p.suffix.lower() == ".txt":
            files.append((p, p.name))
        else:
            raise DataError(f"{p}: a text run predicts texts from a CSV file (its text column), .txt files or a "
                            f"folder of them, not {p.suffix or 'a file without suffix'}")
    where = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files"
    return _text_inputs([_read_txt(f) for f, _ in files], [i for _, i in files], where, "text")


def _text_inputs(texts: list[str], ids: list[str], where: str, fmt: str) -> Inputs:
    if not texts:
        raise DataError(f"{where}: no texts to predict")
    return Inputs(np.array(texts, dtype=object), ids, where, fmt)
