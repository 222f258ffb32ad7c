"""``load_onnx``: an exported ONNX model run by onnxruntime, raw inputs in, a :class:`Prediction` out; and the JSON
file beside every export (written by :func:`build_metadata`, read by :func:`load_onnx`).

Nothing here builds or runs a PyTorch model: the graph has the run's normalization folded in, the JSON beside
it (``model.onnx.json``, written by :func:`dnntune.deploy.export`) says what goes in and comes out, and the
inputs are checked and the outputs turned into labels, probabilities or values with numpy. Importing dnntune
itself still imports torch (the package's ``__init__`` loads the trainer, and :class:`Prediction` lives beside
the torch-based :class:`Preprocessing`), so a deployment needs the package but not the training data.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.preprocess import Prediction, Preprocessing
from ..errors import ConfigError, DataError, UserError
from ._model import ModelOfRun

INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"
ONNX_NAME = "model.onnx"
METADATA_FORMAT = 1


def metadata_path(model_path: str | Path) -> Path:
    """The JSON file beside an exported model: ``model.onnx`` → ``model.onnx.json``."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    cuda = "CUDAExecutionProvider" in available
    device = str(device)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if not cuda:
            raise ConfigError(f"device: {device} needs onnxruntime's CUDAExecutionProvider, which this onnxruntime "
                              f"lacks (it has {', '.join(available)}); install onnxruntime-gpu, or use cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(f"device: {device!r} with onnxruntime; allowed: auto, cpu, cuda")


def onnx_session(path: str | Path, device: str = "cpu", threads: int | None = None, where: str = ""):
    """An ``onnxruntime.InferenceSession`` for ``path`` on ``device`` with ``threads`` intra-op threads.

    Raises:
        UserError: onnxruntime is not installed; DataError: the file is not a model onnxruntime can load.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("onnxruntime is not installed; install it with pip install 'dnntune[deploy]'") from None
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"threads: must be a positive integer (got {threads!r})")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = _providers(device)
    if providers[0] == "CUDAExecutionProvider" and device.startswith("cuda:"):
        providers = [("CUDAExecutionProvider", {"device_id": int(device.split(":", 1)[1])}), "CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable or invalid models
        raise DataError(f"{where or path}: not an ONNX model onnxruntime can load ({str(e).strip()[:300]})") from None


@dataclass
class OnnxRun(ModelOfRun):
    """An exported ONNX model with its metadata, ready to predict raw inputs. Made by :func:`load_onnx`.

    Attributes:
        path: the ``.onnx`` file.
        metadata: its ``model.onnx.json`` as a dict (input/output names and shapes, task, class names, feature
            names, what is folded into the graph, the parity numbers of the export, versions, recipe, metrics).
        preprocessing: the run's input spec, task, outputs and class names as a Preprocessing *without*
            normalization: it is folded into the graph, so raw inputs go in as they are.
        session: the ``onnxruntime.InferenceSession``.
    """

    path: Path
    metadata: dict = field(repr=False)
    preprocessing: Preprocessing = field(repr=False)
    session: Any = field(repr=False)


    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers in use, first choice first."""
        return self.session.get_providers()

    @property
    def recipe(self):
        """The run's recipe (validated), or None if it cannot be validated here (e.g. a plugin family)."""
        from ..config import validate_recipe

        try:
            return validate_recipe(self.metadata.get("recipe") or {}, str(metadata_path(self.path)))
        except ConfigError:
            return None

    @property
    def summary(self) -> dict:
        """The run's metrics as exported (``{"metrics": ...}``), for ``serve``'s ``/metadata``."""
        return {"metrics": self.metadata.get("metrics")}

    def predict(self, inputs: Any, batch_size: int = 512) -> Prediction:
        """Predict raw inputs of shape (N, *input_shape), as :meth:`LoadedRun.predict` does.

        Args:
            inputs: numpy array, torch tensor or nested list in the dataset's raw units (not normalized).
            batch_size: samples per ``session.run``.

        Returns:
            A Prediction: ``outputs`` (N, num_outputs); classification ``indices``, ``labels``,
            ``probabilities``; multi-label ``probabilities``, ``decisions``, ``labels``; regression ``values`` in
            the target's units.

        Raises:
            DataError: wrong shape (naming expected and got), not numeric, or NaN/inf.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size: must be a positive integer (got {batch_size!r})")
        if self.preprocessing.featurizer is not None:  # raw rows → the encoded features the graph takes
            inputs = self.preprocessing.featurizer.transform(inputs)
        x = raw_inputs(inputs, self.preprocessing)
        name = self.metadata["input"]["name"]
        outs = [self.session.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        out = np.concatenate(outs) if outs else np.empty((0, self.preprocessing.num_outputs), np.float32)
        return predictions(self.preprocessing, out.astype(np.float32, copy=False))

    def __repr__(self) -> str:
        p = self.preprocessing
        what = {"classification": f"{p.num_outputs} classes", "multilabel": f"{p.num_outputs} labels"}.get(
            p.task, "regression")
        return (f"OnnxRun({str(self.path)!r}: {p.dataset} ({p.kind} {'×'.join(map(str, p.input_shape))}, {what}), "
                f"{self.providers[0]})")


def raw_inputs(x: Any, pre: Preprocessing) -> np.ndarray:
    """Inputs as a contiguous float32 array (N, *input_shape), checked as ``Preprocessing.transform_inputs``
    checks them (same messages), without normalizing.

    Raises:
        DataError: not real numbers, the wrong shape, or NaN/inf values.
    """
    if pre.kind == "sequence":
        return _token_ids(x, pre)
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor (torch is loaded if one exists)
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"inputs: must be real numbers (got dtype {a.dtype})")
    pre.check_shape(a.shape)
    v = np.ascontiguousarray(a, dtype=np.float32)
    bad = ~np.isfinite(v)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"inputs: {int(bad.sum())} NaN/inf value(s), first at index {idx}; the model was "
                        f"trained on finite values only")
    return v


def _token_ids(x: Any, pre: Preprocessing) -> np.ndarray:
    """A text model's input: texts encoded by the tokenizer saved beside the export, or token ids as given."""
    if hasattr(x, "detach") and hasattr(x, "numpy"):
        x = x.detach().cpu().numpy()
    if pre.featurizer is not None:
        return np.ascontiguousarray(pre.featurizer.transform(x), dtype=np.int64)
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer):
        raise DataError("inputs: this exported text model has no tokenizer beside it (model.onnx.tokenizer.json); "
                        "pass token ids (N, max_length) or re-export with `dnntune export`")
    pre.check_shape(a.shape)
    return np.ascontiguousarray(a, dtype=np.int64)


def predictions(pre: Preprocessing, out: np.ndarray) -> Prediction:
    """Outputs (N, num_outputs) of a graph with the target scaling folded in, as a :class:`Prediction`."""
    if pre.task == "multilabel":  # logits: sigmoid and the run's per-label thresholds, as Preprocessing does
        from ..data.preprocess import multilabel_prediction

        return multilabel_prediction(out, pre.labels or [], pre.thresholds)
    if pre.task == "classification":
        labels = pre.labels or []
        idx = out.argmax(1) if len(out) else np.empty(0, np.int64)
        e = np.exp(out - out.max(1, keepdims=True)) if len(out) else out
        probs = (e / e.sum(1, keepdims=True)).astype(np.float32) if len(out) else out.copy()
        return Prediction(outputs=out, indices=idx.astype(np.int64), labels=[labels[i] for i in idx.tolist()],
                          probabilities=probs)
    return Prediction(outputs=out, values=out.reshape(len(out), *pre.target_shape))


# --- the JSON beside an exported model ----------------------------------------------------------------


def package_version(package: str) -> str | None:
    """The installed version of a distribution, or None."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def build_metadata(run, result, shapes: dict[str, list], versions: dict) -> dict:
    """The ``model.onnx.json`` / ``model.pt2.json`` of an export: what goes in, what comes out, what is folded in,
    the run's preprocessing, recipe and metrics, the parity numbers of the check and the versions.

    Args:
        run: the LoadedRun exported; result: its ExportResult; shapes: ``{"input": [...], "output": [...]}`` with
            the dynamic batch dimension named; versions: package → version.
    """
    import datetime

    pre = run.preprocessing
    regression = pre.task == "regression"
    meaning = (("values in the target's own units (the training-time standardization is undone in the graph); "
                f"reshape each row to target_shape {list(pre.target_shape)}") if regression else
               "logits: sigmoid gives each label's probability, a label is present when it is >= its threshold "
               "(preprocessing.thresholds)" if pre.task == "multilabel" else
               "logits: softmax gives the class probabilities, argmax the class index into class_names")
    folded = {"inputs": "(x - mean) / std, in the graph" if pre.mean is not None else "none (trained on raw inputs)"}
    if regression:
        folded["targets"] = "out * y_std + y_mean, in the graph" if pre.y_std is not None else "none"
    summary = run.summary or {}
    return {
        "format": METADATA_FORMAT, "export_format": result.format, "model_file": result.path.name,
        "input": {"name": INPUT_NAME, "shape": shapes["input"], "dtype": "int64" if pre.kind == "sequence" else
                  "float32", "description": _input_description(pre)},
        "output": {"name": OUTPUT_NAME, "shape": shapes["output"], "dtype": "float32", "meaning": meaning},
        "task": pre.task, "kind": pre.kind, "dataset": pre.dataset, "input_shape": list(pre.input_shape),
        "num_outputs": pre.num_outputs, "class_names": pre.labels, "target_shape": list(pre.target_shape),
        "feature_names": getattr(pre, "feature_names", None),
        "normalization_folded": True, "folded": folded,
        "preprocessing": json.loads(pre.to_files()["preprocess.json"]),
        "parity": {"max_abs_diff": result.max_abs_diff, "argmax_agreement": result.argmax_agreement,
                   "checked_samples": result.checked_samples, "tolerance": result.tolerance,
                   "inputs": result.input_source, "real_inputs": result.real_inputs,
                   "against": "the run's PyTorch model (dnntune.load_run(...).predict)"},
        "recipe": run.recipe.to_dict(), "metrics": summary.get("metrics"), "run": str(run.path),
        "versions": versions, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _input_description(pre: Preprocessing) -> str:
    if pre.kind == "sequence":  # a text model: the tokenizer runs outside the graph
        return (f"token ids {pre.describe_input()}, int64, right-padded with 0: the run's tokenizer (saved beside "
                "the model, see featurizer_files) applied to the texts")
    return f"raw inputs {pre.describe_input()}, before any normalization"


# --- reading it back, and running the model ------------------------------------------------------------


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        for candidate in (p / ONNX_NAME, p / "best" / ONNX_NAME):
            if candidate.is_file():
                return candidate
        raise DataError(f"{p}: holds no {ONNX_NAME}; export it first with `dnntune export {p} --format onnx`")
    return p


def _read_metadata(path: Path) -> dict:
    jpath = metadata_path(path)
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{jpath}: missing; it is written beside {path.name} by `dnntune export` and says what "
                        f"goes in and comes out (copy the two files together)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{jpath}: cannot be read as JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{jpath}: expected a JSON object")
    fmt = meta.get("format")
    if not isinstance(fmt, int) or fmt > METADATA_FORMAT:
        raise DataError(f"{jpath}: format {fmt!r} is not readable by this dnntune (reads format {METADATA_FORMAT})")
    missing = [k for k in ("input", "output", "preprocessing", "normalization_folded") if k not in meta]
    if missing:
        raise DataError(f"{jpath}: missing field(s) {', '.join(missing)}")
    if not isinstance(meta["input"], dict) or not isinstance(meta["input"].get("name"), str):
        raise DataError(f"{jpath}: input.name must be the graph's input name")
    if meta["normalization_folded"] is not True:
        raise DataError(f"{jpath}: normalization_folded is {meta['normalization_folded']!r}; this dnntune runs "
                        f"only graphs with the normalization folded in (re-export with `dnntune export`)")
    return meta


def _featurizer_of(raw: dict, jpath: Path):
    """The run's fitted featurizer when its state is all in the JSON (the tabular encoder): ``predict`` then
    takes raw rows, as ``LoadedRun.predict`` does; the graph itself takes the encoded features."""
    from ..data.preprocess import _featurizer

    desc = raw.get("featurizer")
    if not isinstance(desc, dict) or desc.get("files"):
        return None
    return _featurizer(raw, {}, str(jpath.parent))


def _preprocessing(meta: dict, jpath: Path) -> Preprocessing:
    """The exported run's spec as a Preprocessing without normalization or target scaling (folded in the graph)."""
    raw = meta["preprocessing"]
    known = {f.name for f in dataclasses.fields(Preprocessing)} - {"mean", "std", "y_mean", "y_std", "featurizer"}
    try:
        if raw["task"] not in ("classification", "regression", "multilabel") or \
                raw["kind"] not in ("tabular", "signal", "image", "sequence"):
            raise ValueError(f"task {raw['task']!r} / kind {raw['kind']!r}")
        fields = {k: v for k, v in raw.items() if k in known}
        fields["featurizer"] = _featurizer_of(raw, jpath)
        pre = Preprocessing(**fields)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{jpath}: preprocessing is not a dnntune preprocessing description ({e})") from None
    if pre.kind == "sequence":
        pre.featurizer = _text_featurizer(meta, jpath)
    return pre


def _text_featurizer(meta: dict, jpath: Path):
    """A text model's tokenizer from the files ``dnntune export`` wrote beside it (None if they are absent:
    the model then takes token ids only)."""
    from ..data.preprocess import _featurizer

    sidecars = meta.get("featurizer_files")
    if not isinstance(sidecars, dict) or "featurizer" not in meta["preprocessing"]:
        return None
    files = {}
    for name, beside in sidecars.items():
        path = jpath.parent / str(beside)
        if Path(str(beside)).name != str(beside) or not path.is_file():
            raise DataError(f"{path}: missing; {jpath} names it as the model's tokenizer (copy it with the model)")
        files[str(name)] = path.read_bytes()
    return _featurizer(meta["preprocessing"], files, str(jpath.parent))


def load_onnx(path: str | Path, device: str = "auto", threads: int | None = None) -> OnnxRun:
    """Load an exported ONNX model (``dnntune export RUN_DIR --format onnx``) to predict with onnxruntime.

    Args:
        path: an ``.onnx`` file, or a folder holding ``model.onnx`` (a run folder, or a tune run folder whose
            ``best/`` holds it); ``model.onnx.json`` must be beside it.
        device: ``auto`` (CUDAExecutionProvider when onnxruntime has it, else CPU), ``cpu`` or ``cuda[:N]``.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, one per physical core).

    Returns:
        An OnnxRun with ``predict(raw_inputs, batch_size=512)``, ``task``, ``class_names``, ``input_shape``,
        ``preprocessing``, ``metadata`` and ``session``.

    Raises:
        DataError: no model.onnx, no or a malformed model.onnx.json (the message names the file and field), or a
            file onnxruntime cannot load.
        ConfigError: a device onnxruntime cannot use here.
    """
    model = _resolve(path)
    meta = _read_metadata(model)
    pre = _preprocessing(meta, metadata_path(model))
    session = onnx_session(model, device, threads, where=str(model))
    names = [i.name for i in session.get_inputs()]
    if meta["input"]["name"] not in names:
        raise DataError(f"{metadata_path(model)}: input.name {meta['input']['name']!r} is not an input of "
                        f"{model.name} (it has {', '.join(names)}); the two files are from different exports")
    return OnnxRun(path=model, metadata=meta, preprocessing=pre, session=session)
