"""The data kind (tabular, signal, image, sequence): declared with ``data.kind``, or inferred from the shape.

A dataset that knows its kind (mnist1d, digits, csv...) keeps it. Arrays of unknown kind (``npz`` files,
the Python API's ``data=``, plugin datasets registered with ``kind="auto"``) are inferred by rank:

=========================  ====================================================================
inputs                      kind
=========================  ====================================================================
(N,) or (N, F)              tabular (integer (N, L) arrays too, unless ``data.kind: sequence``)
(N, A, B), A ≤ 16, A < B    signal with A channels of length B
(N, A, B) otherwise         image (N, 1, A, B): one channel of A × B pixels
(N, C, H, W)                image
=========================  ====================================================================

The inferred kind is printed once (stderr) with how to override it. ``data.kind`` converts the inputs to
the declared kind: ``tabular`` flattens, ``signal`` adds a channel to (N, L), ``image`` adds a channel to
(N, H, W), ``sequence`` takes (N, L) whole-number token ids (padding id 0).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from ..errors import ConfigError

MAX_SIGNAL_CHANNELS = 16
RANK_GUESSED = {"npz"}  # loaders whose kind is only a guess from the array's rank: inferred here instead
_said: set[str] = set()  # notes already printed in this process


def infer_kind(shape: tuple[int, ...]) -> str:
    """The kind of inputs of this shape (N first) by the rule in this module's docstring."""
    if len(shape) <= 2:
        return "tabular"
    if len(shape) == 3:
        a, b = shape[1], shape[2]
        return "signal" if a <= MAX_SIGNAL_CHANNELS and a < b else "image"
    if len(shape) == 4:
        return "image"
    raise ConfigError(f"data: inputs of shape {tuple(shape)}: expected (N, F), (N, C, L), (N, H, W) or (N, C, H, W)")


def as_kind(x: np.ndarray, kind: str, where: str) -> np.ndarray:
    """``x`` (N, ...) in the layout of ``kind``; a ConfigError naming data.kind if it cannot be."""
    shape = tuple(x.shape)
    if x.ndim == 1:
        x = x[:, None]
    if kind == "tabular":
        return x.reshape(len(x), -1)
    if kind == "signal" and x.ndim in (2, 3):
        return x[:, None, :] if x.ndim == 2 else x
    if kind == "image" and x.ndim in (3, 4):
        return x[:, None] if x.ndim == 3 else x
    if kind == "sequence" and x.ndim == 2:
        numeric = np.issubdtype(x.dtype, np.number)
        if not numeric or not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(x != np.round(x)):
            raise ConfigError(f"data.kind: sequence needs whole-number token ids >= 0 (padding id 0); {where} "
                              f"holds {x.dtype} values that are not")
        return x.astype(np.int64)
    need = {"signal": "(N, L) or (N, C, L)", "image": "(N, H, W) or (N, C, H, W)", "sequence": "(N, L)"}
    raise ConfigError(f"data.kind: {kind} needs inputs of shape {need.get(kind, '?')}; {where} has shape {shape}")


def _note(text: str) -> None:
    if text not in _said:
        _said.add(text)
        print(f"dnntune: note: {text}", file=sys.stderr)


def resolve_kind(raw, section):
    """``raw`` (a RawData) with its inputs in the kind ``data.kind`` declares, or the dataset's own kind, or
    the kind inferred from the shape (printing what was inferred and how to override it)."""
    declared = getattr(section, "kind", "auto")
    fz = raw.featurizer
    if fz is not None:  # raw inputs: the featurizer decides what they become
        if declared not in ("auto", fz.kind):
            raise ConfigError(f"data.kind: {declared}, but {section.name} is turned into {fz.kind} inputs by its "
                              f"featurizer; remove data.kind or set it to {fz.kind}")
        return raw
    if raw.x is None:
        return raw
    unknown = raw.kind in (None, "auto") or section.name in RANK_GUESSED
    x = np.asarray(raw.x)
    if declared == "auto":
        if not unknown:
            return raw
        kind = infer_kind(x.shape)
        converted = as_kind(x, kind, section.name)
        change = "" if converted.shape == x.shape else f" as {_shape(converted.shape)}"
        _note(f"{section.name}: inputs of shape {_shape(x.shape)} taken as {kind}{change}; set data.kind "
              f"(tabular, signal, image, sequence) to override")
    else:
        kind = declared
        if kind == raw.kind and not unknown:
            return raw
        converted = as_kind(x, kind, section.name)
    x_test = None if raw.x_test is None else as_kind(np.asarray(raw.x_test), kind, f"{section.name}'s test split")
    return dataclasses.replace(raw, x=converted, x_test=x_test, kind=kind)


def _shape(shape: tuple[int, ...]) -> str:
    return "(N, " + ", ".join(map(str, shape[1:])) + ")"
