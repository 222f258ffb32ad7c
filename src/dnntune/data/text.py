"""Text classification data: ``text_csv`` (a text and a label column) and ``text_folder`` (one folder of ``.txt``
files per class), read as raw strings and turned into token ids by :class:`TextTokenizer`.

The tokenizer is a Hugging Face ``tokenizers`` model (BPE, WordPiece or byte-level BPE) trained in
:func:`~dnntune.data.core.prepare` on the texts of the *training* split only (never validation or test), so
the vocabulary holds no word that appears only in held-out documents. It is saved as ``tokenizer.json`` in
every run folder and reloaded by ``load_run`` / ``predict`` / ``serve`` to exactly the same ids. Token ids are
right-padded with id 0 (``[PAD]``) or truncated to ``max_length``; ``[UNK]`` is id 1 and ``[MASK]`` id 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from ..errors import DataError
from ..registry import Knobs
from .core import DATASETS, Featurizer, RawData, register_featurizer
from .files import TaskKnob, _read_csv, _resolve, _targets, class_folder_roots

PAD, UNK, MASK = "[PAD]", "[UNK]", "[MASK]"
SPECIALS = (PAD, UNK, MASK)  # ids 0, 1, 2 in every trained vocabulary
TokenizerKind = Literal["bpe", "wordpiece", "byte_level"]
INSTALL = "pip install 'dnntune[text]'"


def _tokenizers():
    """The ``tokenizers`` package, imported on first use (an optional dependency)."""
    try:
        import tokenizers
    except ImportError:
        raise DataError(f"text data needs the Hugging Face tokenizers package; install it with {INSTALL}") from None
    return tokenizers


class TokenizerKnobs(Knobs):
    """The knobs of the tokenizer, shared by every text dataset."""

    tokenizer: TokenizerKind = Field("bpe", description="subword model: bpe, wordpiece or byte_level (byte BPE, "
                                     "no unknown characters)")
    vocab_size: int = Field(8000, ge=100, le=1_000_000, description="largest vocabulary the tokenizer learns "
                            "(from the training split; fewer if the texts hold fewer subwords)")
    max_length: int = Field(128, ge=1, le=8192, description="tokens per text: longer texts are truncated, "
                            "shorter ones padded with id 0")
    lowercase: bool = Field(True, description="lowercase (and NFKC-normalize) texts before tokenizing")


# --- the featurizer -------------------------------------------------------------------------------


@register_featurizer
class TextTokenizer(Featurizer):
    """Raw strings → (N, max_length) int64 token ids, with a subword tokenizer trained on the training split.

    Example:
        >>> fz = TextTokenizer(vocab_size=100, max_length=6).fit(["a red apple", "the blue sea"] * 5, None)
        >>> ids = fz.transform(["a red sea", ""])
        >>> ids.shape, ids.dtype, int(ids[1].max())
        ((2, 6), dtype('int64'), 0)
        >>> TextTokenizer.from_state(*fz.to_state()).transform(["a red sea"]).tolist() == ids[:1].tolist()
        True
    """

    type = "text_tokenizer"
    kind = "sequence"
    dtype = torch.long

    def __init__(self, tokenizer: TokenizerKind = "bpe", vocab_size: int = 8000, max_length: int = 128,
                 lowercase: bool = True, fitted: Any = None):
        self.tokenizer, self.vocab_size, self.max_length, self.lowercase = tokenizer, vocab_size, max_length, lowercase
        self.fitted = fitted  # a tokenizers.Tokenizer once fitted

    @classmethod
    def from_knobs(cls, knobs: TokenizerKnobs) -> TextTokenizer:
        return cls(knobs.tokenizer, knobs.vocab_size, knobs.max_length, knobs.lowercase)

    def _untrained(self):
        tk = _tokenizers()
        from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

        common = {"vocab_size": self.vocab_size, "special_tokens": list(SPECIALS), "show_progress": False}
        if self.tokenizer == "wordpiece":
            tok = tk.Tokenizer(models.WordPiece(unk_token=UNK))
            tok.pre_tokenizer = pre_tokenizers.Whitespace()
            tok.decoder = decoders.WordPiece()
            trainer = trainers.WordPieceTrainer(**common)
        elif self.tokenizer == "bpe":
            tok = tk.Tokenizer(models.BPE(unk_token=UNK))
            tok.pre_tokenizer = pre_tokenizers.Whitespace()
            trainer = trainers.BpeTrainer(**common)
        else:  # byte-level BPE (GPT-2 style): every byte is in the alphabet, nothing is unknown
            tok = tk.Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **common)
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if self.lowercase else [])
        tok.normalizer = normalizers.Sequence(steps)
        return tok, trainer

    def fit(self, x_train: Any, y_train: Any) -> TextTokenizer:
        """A tokenizer trained on these (training) texts only; padding / truncation to ``max_length``."""
        texts = _texts(x_train)
        tok, trainer = self._untrained()
        tok.train_from_iterator(texts, trainer, length=len(texts))
        for i, name in enumerate(SPECIALS):
            if tok.token_to_id(name) != i:  # pragma: no cover - the trainers put special tokens first
                raise DataError(f"tokenizer: special token {name} got id {tok.token_to_id(name)}, expected {i}")
        return TextTokenizer(self.tokenizer, self.vocab_size, self.max_length, self.lowercase, _padded(tok,
                                                                                                  self.max_length))

    def transform(self, x: Any) -> np.ndarray:
        """Texts (a list or 1-D array of strings; one string = one text) → int64 ids (N, max_length).

        An integer array of shape (N, max_length) is taken as token ids already (as the exported model takes
        them) and only checked against the vocabulary."""
        if self.fitted is None:
            raise DataError("text tokenizer: not fitted")
        ids = _as_ids(x, self.max_length, self.fitted.get_vocab_size())
        if ids is not None:
            return ids
        texts = _texts(x)
        out = np.zeros((len(texts), self.max_length), dtype=np.int64)
        for r, enc in enumerate(self.fitted.encode_batch(texts)):
            out[r] = enc.ids
        return out

    def input_info(self) -> dict[str, Any]:
        return {"vocab_size": int(self.fitted.get_vocab_size()), "pad_id": 0, "unk_id": 1, "mask_id": 2,
                "max_length": self.max_length, "tokenizer": self.tokenizer}

    def to_state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        state = {"tokenizer": self.tokenizer, "vocab_size": self.vocab_size, "max_length": self.max_length,
                 "lowercase": self.lowercase}
        return state, {"tokenizer.json": self.fitted.to_str().encode("utf-8")}

    @classmethod
    def from_state(cls, state: dict[str, Any], files: dict[str, bytes]) -> TextTokenizer:
        tk = _tokenizers()
        try:
            kind, size, length, lower = (state["tokenizer"], int(state["vocab_size"]), int(state["max_length"]),
                                         bool(state["lowercase"]))
            tok = tk.Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
        except Exception as e:  # noqa: BLE001 - a missing key, a bad value, or tokenizers' own plain Exception
            raise DataError(f"tokenizer.json / preprocess.json: not a saved dnntune text tokenizer ({e})") from None
        return cls(kind, size, length, lower, _padded(tok, length))


def _padded(tok, max_length: int):
    """The tokenizer set to truncate to and pad up to ``max_length`` with id 0."""
    tok.enable_truncation(max_length)
    tok.enable_padding(direction="right", pad_id=0, pad_token=PAD, length=max_length)
    return tok


def _texts(x: Any) -> list[str]:
    """Inputs as a list of strings; a DataError naming the first entry that is not one."""
    if isinstance(x, str):
        return [x]
    if isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]  # one column of a table
    if isinstance(x, np.ndarray) and x.ndim != 1:
        raise DataError(f"inputs: expected a list of texts, got an array of shape {tuple(x.shape)}")
    try:
        items = list(x)
    except TypeError:
        raise DataError(f"inputs: expected a list of texts, got {type(x).__name__}") from None
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise DataError(f"inputs[{i}]: expected a text (string), got {type(t).__name__} {str(t)[:40]!r}")
    return items


def _as_ids(x: Any, max_length: int, vocab: int) -> np.ndarray | None:
    """An integer array (N, max_length) of valid ids as int64; None for anything else (texts)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.integer):
        return None
    if x.ndim != 2 or x.shape[1] != max_length:
        raise DataError(f"inputs: token ids must have shape (N, {max_length}), got {tuple(x.shape)}; or pass texts")
    if x.size and (x.min() < 0 or x.max() >= vocab):
        raise DataError(f"inputs: token ids must lie in [0, {vocab}) (the vocabulary), got {x.min()}..{x.max()}")
    return x.astype(np.int64)


# --- datasets -------------------------------------------------------------------------------------


class TextCSVKnobs(TokenizerKnobs):
    path: str = Field(..., description="CSV file with a header row")
    text: str | tuple[str, ...] = Field("text", description="the text column (several: joined by a newline)")
    label: str = Field("label", description="the label column")
    delimiter: str = Field(",", min_length=1, max_length=1, description="field separator, e.g. ';' or '\\t'")
    task: TaskKnob = Field("classification", description="classification (any labels) or regression (numbers); "
                           "auto: classification for text or few whole-number labels")


class TextFolderKnobs(TokenizerKnobs):
    path: str = Field(..., description="root folder: one subfolder of .txt files per class (or train/ and test/)")


def _column(path: Path, header: list[str], name: str, what: str, hint: str = "") -> int:
    if name not in header:
        raise DataError(f"{path}: no {what} column {name!r}; columns: {', '.join(header)} "
                        f"({hint or f'set data.{what}'})")
    return header.index(name)


def _check_texts(where: str, column: str, texts: list[str]) -> None:
    if not any(t.strip() for t in texts):
        raise DataError(f"{where}: {column} is empty in every row; it must hold the texts to classify")


def _check_classes(where: str, column: str, task: str, names: list[str] | None) -> None:
    if task == "classification" and names is not None and len(names) < 2:
        raise DataError(f"{where}: {column} holds a single class {names[0]!r}; classification needs at "
                        "least 2 classes")


@DATASETS.register("text_csv", TextCSVKnobs, task="any", kind="sequence")
def text_csv(knobs: TextCSVKnobs) -> RawData:
    """Texts and labels from a CSV file: a text column (or several, joined) and a label column; other columns
    are ignored. The tokenizer is trained on the training split in prepare()."""
    path = _resolve(knobs.path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    header, rows, lines = _read_csv(path, knobs.delimiter)
    names = (knobs.text,) if isinstance(knobs.text, str) else tuple(knobs.text)
    if not names:
        raise DataError(f"{path}: data.text names no column")
    cols = [_column(path, header, n, "text") for n in names]
    li = _column(path, header, knobs.label, "label")
    if li in cols:
        raise DataError(f"{path}: column {knobs.label!r} is both the label and a text column")
    texts = ["\n".join(row[c] for c in cols) for row in rows]
    _check_texts(str(path), f"text column {', '.join(map(repr, names))}", texts)
    labels = [row[li] for row in rows]
    empty = next((i for i, v in enumerate(labels) if v == ""), None)
    if empty is not None:
        raise DataError(f"{path}: line {lines[empty]}: label column {knobs.label!r} is empty; every text needs a "
                        "label")
    y = _label_array(labels)
    task, y, _, classes = _targets(f"{path} (label column {knobs.label!r})", knobs.task, y)
    _check_classes(str(path), f"label column {knobs.label!r}", task, classes)
    return RawData(np.array(texts, dtype=object), y, task, "sequence", class_names=classes, source=str(path),
                   featurizer=TextTokenizer.from_knobs(knobs))


def _label_array(labels: list[str]) -> np.ndarray:
    """Labels as integers when they all are, else as strings (sorted names become class indices)."""
    try:
        return np.array([int(v) for v in labels], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(v) for v in labels], dtype=np.float64)
    except ValueError:
        return np.array(labels, dtype=str)


def _read_txt(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{p}: cannot be read ({e.strerror or e})") from None


def _scan_texts(root: Path, classes: list[str] | None = None) -> list[tuple[Path, str]]:
    """(file, class) pairs: the .txt files in each class subfolder of ``root``."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class subfolders (expected one folder of .txt files per class)")
    items = []
    for folder in folders:
        if classes is not None and folder.name not in classes:
            raise DataError(f"{folder}: class {folder.name!r} is not among the training classes "
                            f"({', '.join(classes)})")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".txt"
                       and not p.name.startswith("."))
        if not files:
            raise DataError(f"{folder}: class folder has no .txt files")
        items += [(p, folder.name) for p in files]
    return items


@DATASETS.register("text_folder", TextFolderKnobs, task="classification", kind="sequence")
def text_folder(knobs: TextFolderKnobs) -> RawData:
    """A folder of ``.txt`` files, one subfolder per class (sorted names = class indices); a train/ (and test/)
    subfolder gives the dataset its own test split."""
    train_root, test_root = class_folder_roots(knobs.path)
    train = _scan_texts(train_root)
    classes = sorted({c for _, c in train})
    _check_classes(str(train_root), "the class subfolders", "classification", classes)
    test = _scan_texts(test_root, classes) if test_root is not None else None
    index = {c: i for i, c in enumerate(classes)}

    def split(items):
        texts = [_read_txt(p) for p, _ in items]
        return np.array(texts, dtype=object), np.array([index[c] for _, c in items], dtype=np.int64)

    x, y = split(train)
    _check_texts(str(train_root), "every .txt file", list(x))
    x_test, y_test = split(test) if test is not None else (None, None)
    return RawData(x, y, "classification", "sequence", x_test=x_test, y_test=y_test, class_names=classes,
                   source=str(_resolve(knobs.path)), featurizer=TextTokenizer.from_knobs(knobs))


def texts_of(path: str | Path, columns: str | tuple[str, ...] = "text", delimiter: str = ",") -> list[str]:
    """The texts of a CSV file's text column(s), joined as ``text_csv`` joins them: what ``dnntune predict``
    reads for a text run. Other columns (a label, ids) are ignored."""
    path = Path(path)
    header, rows, _ = _read_csv(path, delimiter)
    names = (columns,) if isinstance(columns, str) else tuple(columns)
    hint = "the run was trained on texts from the column(s) " + ", ".join(map(repr, names))
    cols = [_column(path, header, n, "text", hint) for n in names]
    return ["\n".join(row[c] for c in cols) for row in rows]
