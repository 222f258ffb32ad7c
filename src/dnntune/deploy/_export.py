"""``export``: a run folder's model as ONNX (``torch.onnx`` dynamo exporter) or a ``torch.export`` program (.pt2).

The exported graph takes raw inputs: the input normalization of the run (``(x - mean) / std``) is folded into
it, and for regression so is the target unscaling (``out * y_std + y_mean``), so its outputs are logits or
values in the target's own units. A small JSON file beside it (``model.onnx.json``, ``model.pt2.json``) says
what goes in and comes out (:mod:`dnntune.deploy._onnx` reads it). Every export is checked on the spot: the
exported model (in onnxruntime, or the .pt2 program loaded back) against the run's PyTorch model on up to 256
inputs; a difference above the tolerance or one changed argmax is an :class:`ExportCheckFailed` and no file is
left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import logging
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data.preprocess import Preprocessing
from ..errors import ConfigError, DataError, OutDirUnwritable, UserError
from ._onnx import INPUT_NAME, OUTPUT_NAME, build_metadata, metadata_path, onnx_session, package_version
from ._run import LoadedRun, load_run

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}
TOLERANCE = 1e-4  # max |exported - PyTorch| on float32 logits (regression: on the standardized outputs)
MAX_CHECK = 256  # samples compared
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class ExportError(UserError):
    """A model could not be exported (missing packages, an operator the format lacks, a failed check)."""


class ExportUnsupported(ExportError):
    """The model uses something the export format cannot express; ``operator`` names it when known."""

    def __init__(self, message: str, operator: str | None = None):
        super().__init__(message)
        self.operator = operator


class ExportCheckFailed(ExportError):
    """The exported model's outputs differ from the PyTorch model's beyond the tolerance (nothing was written)."""

    def __init__(self, message: str, max_abs_diff: float, argmax_agreement: float | None):
        super().__init__(message)
        self.max_abs_diff, self.argmax_agreement = max_abs_diff, argmax_agreement


@dataclass
class ExportResult:
    """What :func:`export` wrote and how well it reproduces the PyTorch model.

    Attributes:
        path: the exported model file (``.onnx`` or ``.pt2``).
        format: ``onnx`` or ``torch-export``.
        max_abs_diff: the largest |exported - PyTorch| over the checked outputs (logits; regression: values
            in the target's units).
        argmax_agreement: classification: the share of checked samples whose predicted class is the same
            (always 1.0 in a returned result); None for regression.
        checked_samples: how many inputs were compared.
        seconds: wall time of the whole export, check included.
        metadata_path: the JSON file beside the model (``model.onnx.json``).
        input_source: where the checked inputs came from (the run's test split, the inputs given, or random
            inputs from the saved normalization statistics when the data could not be rebuilt).
        real_inputs: False when the check ran on random inputs only.
        tolerance: the largest allowed ``max_abs_diff``: 1e-4 (regression: 1e-4 × max(1, the target's
            training std)).
    """

    path: Path
    format: str
    max_abs_diff: float
    argmax_agreement: float | None
    checked_samples: int
    seconds: float
    metadata_path: Path
    input_source: str = ""
    real_inputs: bool = True
    tolerance: float = TOLERANCE


class FoldedModel(nn.Module):
    """A run's model with its preprocessing folded in: raw inputs in, logits (or target-unit values) out."""

    def __init__(self, model: nn.Module, pre: Preprocessing):
        super().__init__()
        self.model = model
        self.normalize = pre.mean is not None
        self.unscale = pre.task == "regression" and pre.y_std is not None
        if self.normalize:
            self.register_buffer("mean", pre.mean.detach().float().clone())
            self.register_buffer("std", pre.std.detach().float().clone())
        if self.unscale:  # the arithmetic of Preprocessing.outputs_to_predictions on (N, num_outputs)
            self.register_buffer("y_mean", pre.y_mean.detach().float().reshape(-1).clone())
            self.register_buffer("y_std", pre.y_std.detach().float().reshape(-1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = (x - self.mean) / self.std
        out = self.model(x)
        if self.unscale:
            out = out * self.y_std + self.y_mean
        return out


def export(run_dir: str | Path, format: str = "onnx", out: str | Path | None = None, *,
           inputs: Any = None) -> ExportResult:
    """Export a run folder's model and check it against the PyTorch model on the spot.

    Args:
        run_dir: a run folder (``dnntune train`` run, trial, ``best/``, or a tune run folder: its ``best/``).
        format: ``onnx`` (``torch.onnx.export(..., dynamo=True)``, run by onnxruntime) or ``torch-export``
            (a ``torch.export`` program, ``torch.export.load`` reads it).
        out: the file to write, or a folder for ``model.onnx`` / ``model.pt2``; default ``RUN_DIR/model.onnx``
            (``RUN_DIR/model.pt2``). The metadata goes beside it as ``<file>.json``.
        inputs: raw inputs (N, *input_shape) to check on (the first 256 are used); default: the raw test split
            rebuilt from the recipe (``load_data`` with ``data.normalize: false``), or, when the data cannot be
            rebuilt, 256 random inputs drawn from the saved normalization statistics (the result says so).

    Returns:
        An ExportResult: the path, the parity numbers, where the checked inputs came from, the metadata path.

    Raises:
        ConfigError: an unknown format, or ``out`` with the wrong suffix.
        DataError: the run folder cannot be loaded, or ``inputs`` do not fit the model.
        ExportUnsupported: the model uses an operator the format cannot express (the message names it).
        ExportCheckFailed: the exported model's outputs differ (the message gives the numbers); no file written.
        ExportError: the packages the format needs are not installed.
    """
    t0 = time.perf_counter()
    if format not in FORMATS:
        raise ConfigError(f"format: {format!r} is not an export format; allowed: {', '.join(FORMATS)}")
    if format == "onnx":
        _require_onnx()
    run = load_run(run_dir)
    dest = _destination(run.path, format, out)
    x, source, real = check_inputs(run, inputs)
    reference = _reference(run, x)
    diff, agreement, tol, io_shapes, opset = _write_checked(run, format, dest, x, reference, source)
    result = ExportResult(path=dest, format=format, max_abs_diff=diff, argmax_agreement=agreement,
                          checked_samples=len(x), seconds=0.0, metadata_path=metadata_path(dest),
                          input_source=source, real_inputs=real, tolerance=tol)
    versions = {"dnntune": __version__, "torch": torch.__version__}
    if format == "onnx":
        versions.update({p: package_version(p) for p in ONNX_PACKAGES}, opset=opset)
    meta = build_metadata(run, result, io_shapes, versions)
    if sidecars := text_sidecars(run, dest):
        meta["featurizer_files"] = sidecars
    from ..engine.checkpoint import atomic_write_text

    atomic_write_text(result.metadata_path, json.dumps(meta, indent=2) + "\n")
    result.seconds = time.perf_counter() - t0
    return result


def _reference(run: LoadedRun, x: torch.Tensor) -> np.ndarray:
    """The PyTorch model's outputs on the check inputs. With a featurizer (e.g. the tabular encoder) the
    exported graph takes its output, the encoded features, so the reference skips it too. Text runs: the check
    inputs are token ids already, which the tokenizer featurizer passes through."""
    pre = run.preprocessing
    if pre.featurizer is None or pre.kind == "sequence":
        return run.predict(x).outputs
    run.preprocessing = dataclasses.replace(pre, featurizer=None)
    try:
        return run.predict(x).outputs
    finally:
        run.preprocessing = pre


def _write_checked(run: LoadedRun, format: str, dest: Path, x: torch.Tensor, reference: np.ndarray,
                   source: str) -> tuple[float, float | None, float, dict[str, list], dict | None]:
    """Export to a temporary file beside ``dest``, check it, and only then move it into place.

    Returns:
        (max |diff|, argmax agreement, tolerance, the input/output shapes, the ONNX opsets or None).
    """
    wrapper = FoldedModel(run.model, run.preprocessing).eval()
    example = x[:2] if len(x) >= 2 else x.repeat(2, *([1] * (x.ndim - 1)))  # a batch of 1 would fix the size
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        if format == "onnx":
            opset = _to_onnx(wrapper, example, tmp, run)
            got, io_shapes = _run_onnx(tmp, x)
        else:
            opset = None
            _to_program(wrapper, example, tmp, run)
            got, io_shapes = _run_program(tmp, x)
        diff, agreement, tol = check_parity(reference, got, run.preprocessing, f"{dest} ({format})", source)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return diff, agreement, tol, io_shapes, opset


# --- where, and on what ---------------------------------------------------------------------------


def _require_onnx() -> None:
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise ExportError(f"format onnx: needs the packages {', '.join(ONNX_PACKAGES)} (missing: "
                          f"{', '.join(missing)}); install them with pip install 'dnntune[deploy]'")


def _destination(run_dir: Path, format: str, out: str | Path | None) -> Path:
    suffix = FORMATS[format]
    dest = run_dir / f"model{suffix}" if out is None else Path(out)
    if dest.is_dir():
        dest = dest / f"model{suffix}"
    elif dest.suffix.lower() != suffix:
        raise ConfigError(f"out: {dest} must end in {suffix} for format {format} (or name a folder)")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutDirUnwritable(f"out: {dest.parent} cannot be created ({e.strerror or e})") from None
    if not os.access(dest.parent, os.W_OK):
        raise OutDirUnwritable(f"out: {dest.parent} is not writable")
    return dest


def check_inputs(run: LoadedRun, inputs: Any = None) -> tuple[torch.Tensor, str, bool]:
    """Raw float32 inputs to check an export on, a description of where they came from, and whether they are real.

    Raises:
        DataError: ``inputs`` given but not of shape (N, *input_shape), not numeric, empty or not finite.
    """
    pre = run.preprocessing
    if pre.kind == "sequence":
        return _token_inputs(run, inputs)
    if inputs is not None and pre.featurizer is not None:  # raw rows: encoded as training did
        inputs = pre.featurizer.transform(inputs)
        pre = dataclasses.replace(pre, featurizer=None)
    if inputs is not None:
        a = inputs.detach().cpu() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
        a = a[:MAX_CHECK] if a.ndim else a
        pre.transform_inputs(a)  # only to validate: shape, numbers, finite (DataError naming what is wrong)
        if len(a) == 0:
            raise DataError("inputs: empty; pass at least one sample to check the export on")
        return torch.as_tensor(np.asarray(a), dtype=torch.float32), f"the {len(a)} inputs given", True
    recipe = run.recipe
    try:
        name, split = _rebuilt_split(run, recipe.data.model_copy(update={"normalize": False}))
        x = split.x[:MAX_CHECK].to(torch.float32)
        return x, f"{len(x)} raw {name} inputs of {recipe.data.name} (rebuilt from the recipe)", True
    except (UserError, OSError) as e:
        reason = str(e)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(MAX_CHECK, *pre.input_shape, generator=gen)
    if pre.mean is not None:
        return (x * pre.std + pre.mean, f"{MAX_CHECK} random inputs drawn from the saved normalization statistics "
                f"(mean ± std), not real data: the training data could not be rebuilt ({reason})", False)
    return x, (f"{MAX_CHECK} standard-normal random inputs, not real data: the training data could not be rebuilt "
               f"({reason}) and the run saved no normalization statistics"), False


def _rebuilt_split(run: LoadedRun, data_section):
    """(name, split): the first non-empty of the test, validation and training splits of the run's data, rebuilt
    from its recipe with ``data_section``; a DataError if there is none or its shape is not the run's."""
    from ..data import load_data

    data = load_data(data_section, run.recipe.seed)
    name, split = next(((n, s) for n, s in (("test", data.test), ("validation", data.val),
                                             ("training", data.train)) if len(s)), ("", None))
    if split is None or tuple(split.x.shape[1:]) != run.preprocessing.input_shape:
        raise DataError(f"the rebuilt {run.recipe.data.name} data does not have the run's input shape "
                        f"{run.preprocessing.input_shape}")
    return name, split


def _token_inputs(run: LoadedRun, inputs: Any = None) -> tuple[torch.Tensor, str, bool]:
    """Token ids (int64, (N, max_length)) to check a text model's export on: the given texts (or ids) encoded by
    the run's tokenizer, else the rebuilt test split's texts, else random ids of the vocabulary."""
    pre = run.preprocessing
    if inputs is not None:
        ids = pre.transform_inputs(inputs[:MAX_CHECK] if hasattr(inputs, "__getitem__") else inputs)
        if len(ids) == 0:
            raise DataError("inputs: empty; pass at least one text to check the export on")
        return ids, f"the {len(ids)} inputs given", True
    try:
        name, split = _rebuilt_split(run, run.recipe.data)  # token ids: nothing is normalized
        x = split.x[:MAX_CHECK].to(torch.long)
        return x, f"{len(x)} {name} texts of {run.recipe.data.name} as token ids (rebuilt from the recipe)", True
    except (UserError, OSError) as e:
        reason = str(e)
    vocab = int(pre.input_info.get("vocab_size", 2))
    x = torch.randint(1, max(vocab, 2), (MAX_CHECK, *pre.input_shape), generator=torch.Generator().manual_seed(0))
    return x, f"{MAX_CHECK} random token-id sequences, not real texts: the data could not be rebuilt ({reason})", False


def text_sidecars(run: LoadedRun, dest: Path) -> dict[str, str]:
    """A text model's tokenizer files beside its export (``model.onnx.tokenizer.json``), so ``load_onnx`` and
    ``serve --engine onnxruntime`` can take raw texts; {file in the run folder: file beside the export}."""
    fz = run.preprocessing.featurizer
    if run.preprocessing.kind != "sequence" or fz is None:
        return {}
    from ..engine.checkpoint import atomic_write_bytes

    out = {}
    for name, blob in fz.to_state()[1].items():
        atomic_write_bytes(dest.parent / f"{dest.name}.{name}", blob)
        out[name] = f"{dest.name}.{name}"
    return out


def check_parity(reference: np.ndarray, exported: np.ndarray, pre: Preprocessing, what: str = "the export",
                 source: str = "the inputs") -> tuple[float, float | None, float]:
    """Compare an exported model's outputs with the PyTorch model's: (max |diff|, argmax agreement, tolerance).

    The tolerance is 1e-4 on logits; for regression with target scaling 1e-4 × the target's training std when
    that is above 1 (1e-4 in the standardized units the network computes in: float32 keeps about 7 significant
    digits, so a target in the thousands cannot agree to 1e-4 absolute). Classification also needs every
    argmax to agree.

    Raises:
        ExportCheckFailed: naming the difference, the tolerance and the share of samples whose class changed.
    """
    reference, exported = np.asarray(reference, np.float64), np.asarray(exported, np.float64)
    if reference.shape != exported.shape:
        raise ExportCheckFailed(f"{what}: outputs of shape {exported.shape}, the PyTorch model gives "
                                f"{reference.shape}", float("inf"), None)
    tol = TOLERANCE
    if pre.task == "regression" and pre.y_std is not None:  # float32 keeps ~7 digits of a value in the hundreds
        tol = TOLERANCE * max(1.0, float(pre.y_std.abs().min()))
    diff = float(np.abs(exported - reference).max()) if reference.size else 0.0
    if not np.isfinite(exported).all():
        diff = float("inf")
    agreement = None
    if pre.task == "classification":
        same = exported.argmax(1) == reference.argmax(1)
        agreement = float(same.mean()) if len(same) else 1.0
    if diff > tol or (agreement is not None and agreement < 1.0):
        changed = "" if agreement is None else (
            f", argmax agreement {agreement:.1%} ({int((~same).sum())} of {len(same)} predicted classes differ; "
            f"required 100%)")
        raise ExportCheckFailed(f"{what}: does not reproduce the PyTorch model on {source}: max |difference| "
                                f"{diff:.3g} (allowed ≤ {tol:.3g}){changed}; nothing was written", diff, agreement)
    return diff, agreement, tol


# --- the two formats ------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
    """The exporters' progress lines, deprecation warnings and log chatter, kept out of the user's output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _batch_dim() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch")},)


def _to_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path, run: LoadedRun) -> dict[str, int]:
    """Export with the dynamo exporter, a dynamic batch dimension; the opsets used."""
    import torch.onnx

    with _quiet():
        try:
            program = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=_batch_dim(), verbose=False)
        except Exception as e:  # the exporter raises many types; each becomes one clear error
            raise unsupported(e, run, "ONNX") from e
        program.save(path, external_data=False)
    return {k or "ai.onnx": int(v) for k, v in program.model.opset_imports.items()}


def _run_onnx(path: Path, x: torch.Tensor) -> tuple[np.ndarray, dict[str, list]]:
    session = onnx_session(path, "cpu", threads=None, where=str(path))
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    shapes = {"input": list(session.get_inputs()[0].shape), "output": list(session.get_outputs()[0].shape)}
    return got, shapes


def _to_program(wrapper: nn.Module, example: torch.Tensor, path: Path, run: LoadedRun) -> None:
    with _quiet():
        try:
            program = torch.export.export(wrapper, (example,), dynamic_shapes=_batch_dim(), strict=False)
        except Exception as e:
            raise unsupported(e, run, "a torch.export program") from e
        torch.export.save(program, path)


def _run_program(path: Path, x: torch.Tensor) -> tuple[np.ndarray, dict[str, list]]:
    with _quiet():
        module = torch.export.load(path).module()  # the file this export just wrote (plain tensors, no pickles)
        with torch.no_grad():
            got = module(x)
    shapes = {"input": ["batch", *x.shape[1:]], "output": ["batch", *got.shape[1:]]}
    return got.numpy(), shapes


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OVERLOAD = re.compile(r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)")
_TARGET = re.compile(r"target=torch\.ops\.([\w.]+)")


def unsupported(error: BaseException, run: LoadedRun, what: str) -> ExportUnsupported:
    """The exporter's exception as one clear error: the model family, the operator (when named) and why."""
    chain, e = [], error
    while e is not None and len(chain) < 12:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = _ANSI.sub("", "\n".join(f"{type(c).__name__}: {c}" for c in chain))
    op = None
    if m := _OVERLOAD.search(text):
        op = m.group(1) + ("" if m.group(2) == "default" else f".{m.group(2)}")
    elif m := _TARGET.search(text):
        op = m.group(1).removesuffix(".default")
    innermost = chain[-1]
    reason = (_ANSI.sub("", str(innermost)).strip().splitlines() or [type(innermost).__name__])[0][:300]
    if type(innermost).__name__ == "DispatchError" or "No ONNX function found" in reason:
        reason = (f"the ONNX exporter has no translation for it (torch {torch.__version__}, onnxscript "
                  f"{package_version('onnxscript')}; {reason})")
    family = run.recipe.model.family
    what_op = f"operator {op}: {reason}" if op else reason
    hint = ("; --format torch-export keeps every PyTorch operator, or train a model family without it"
            if what == "ONNX" else "; torch.export needs a forward pass it can trace (no data-dependent Python "
            "control flow or untraceable calls)")
    return ExportUnsupported(f"{run.path}: model.family {family} cannot be exported to {what}: {what_op}{hint}", op)
