"""Export (ONNX via the dynamo exporter, torch.export .pt2) and the onnxruntime engine, checked against PyTorch."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import dnntune
from dnntune import load_run
from dnntune.config import validate_recipe
from dnntune.data import load_data
from dnntune.deploy import ExportCheckFailed, ExportUnsupported, export, load_onnx
from dnntune.deploy._export import FoldedModel, check_parity
from dnntune.engine import train
from dnntune.errors import ConfigError, DataError
from dnntune.models import MODELS, InputSpec
from dnntune.registry import NoKnobs

ort = pytest.importorskip("onnxruntime")

# one small size per family (families not listed export at their defaults) and a dataset of a kind it takes
SMALL = {"mlp": {"width": 16, "depth": 1}, "cnn1d": {"channels": 8, "depth": 2}, "cnn2d": {"channels": 8, "depth": 2},
         "resnet": {"channels": 8, "stages": 2, "blocks_per_stage": 1}, "rnn": {"hidden": 16},
         "transformer": {"d_model": 16, "heads": 2, "layers": 1}}
DATA = {"tabular": {"name": "iris"}, "image": {"name": "digits"}, "signal": {"name": "mnist1d", "num_samples": 300},
        # text: the exported graph takes token ids
        "sequence": {"name": "text_csv", "vocab_size": 500, "max_length": 32,
                     "path": str(Path(__file__).parents[2] / "examples" / "data" / "docstrings.csv")}}


def _recipe(family: str, data: dict, **knobs) -> dict:
    return {"seed": 0, "data": data, "model": {"family": family, **knobs}, "train": {"epochs": 1, "batch_size": 64}}


def _data_for(family: str) -> dict:
    kinds = MODELS.get(family).meta.get("kinds") or ("tabular",)
    return DATA[next(k for k in ("tabular", "image", "signal", "sequence") if k in kinds)]


def _raw_test(recipe) -> np.ndarray:
    return load_data(recipe.data.model_copy(update={"normalize": False}), recipe.seed).test.x.numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """family (or a name of RECIPES below) → (recipe, run folder), trained once (1 epoch) and shared."""
    cache = {}

    def get(name: str, raw: dict | None = None):
        if name not in cache:
            raw = raw or _recipe(name, _data_for(name), **SMALL.get(name, {}))
            folder = tmp_path_factory.mktemp(name)
            recipe = validate_recipe(raw)
            train(recipe, out_dir=folder)
            cache[name] = (recipe, folder)
        return cache[name]
    return get


@pytest.mark.parametrize("family", MODELS.names())
def test_onnx_export_runs_in_onnxruntime_like_pytorch(trained, family):
    recipe, folder = trained(family)
    result = export(folder, format="onnx")
    x = _raw_test(recipe)
    assert result.path == folder / "model.onnx" and result.path.is_file()
    assert result.metadata_path == folder / "model.onnx.json" and result.metadata_path.is_file()
    assert result.real_inputs and "test" in result.input_source
    assert result.checked_samples == min(256, len(x))
    assert result.max_abs_diff <= 1e-4 and result.argmax_agreement == 1.0

    torch_pred = load_run(folder).predict(x)
    onnx_run = load_onnx(folder)  # a run folder holding model.onnx
    assert onnx_run.providers[0] == "CPUExecutionProvider"
    pred = onnx_run.predict(x, batch_size=7)  # a dynamic batch: 7, 7, ..., and the remainder
    assert pred.labels == torch_pred.labels
    np.testing.assert_allclose(pred.outputs, torch_pred.outputs, atol=1e-4, rtol=0)
    np.testing.assert_allclose(pred.probabilities, torch_pred.probabilities, atol=1e-5, rtol=0)
    one = onnx_run.predict(x[:1])  # batch 1
    assert one.labels == torch_pred.labels[:1]


@pytest.mark.parametrize("family", MODELS.names())
def test_torch_export_program_round_trips(trained, family):
    recipe, folder = trained(family)
    result = export(folder, format="torch-export")
    assert result.path == folder / "model.pt2" and result.max_abs_diff <= 1e-4 and result.argmax_agreement == 1.0
    meta = json.loads((folder / "model.pt2.json").read_text())
    assert meta["export_format"] == "torch-export" and meta["normalization_folded"] is True

    x = _raw_test(recipe)
    module = torch.export.load(result.path).module()  # what a PyTorch user does: raw inputs in, logits out
    with torch.no_grad():
        out = module(torch.from_numpy(x)).numpy()
    torch_pred = load_run(folder).predict(x)
    np.testing.assert_allclose(out, torch_pred.outputs, atol=1e-4, rtol=0)
    assert [meta["class_names"][i] for i in out.argmax(1)] == torch_pred.labels


def test_the_metadata_tells_a_user_how_to_run_the_bare_onnx_file(trained):
    recipe, folder = trained("mlp")
    result = dnntune.export(folder)  # the top-level API, format onnx by default
    meta = json.loads(result.metadata_path.read_text())
    assert meta["task"] == "classification" and meta["class_names"] == ["setosa", "versicolor", "virginica"]
    assert meta["input"]["name"] == "inputs" and meta["input"]["shape"][1:] == [4]
    assert isinstance(meta["input"]["shape"][0], str)  # the batch dimension is dynamic
    assert meta["normalization_folded"] is True and meta["folded"]["inputs"].startswith("(x - mean) / std")
    assert {"dnntune", "torch", "onnx", "onnxscript", "onnxruntime"} <= set(meta["versions"])
    assert meta["parity"]["max_abs_diff"] == result.max_abs_diff
    assert meta["parity"]["checked_samples"] == result.checked_samples

    # onnxruntime alone, with what the JSON says: raw (unnormalized) features in, logits out
    x = _raw_test(recipe)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    logits = session.run([meta["output"]["name"]], {meta["input"]["name"]: x.astype(np.float32)})[0]
    assert [meta["class_names"][i] for i in logits.argmax(1)] == load_run(folder).predict(x).labels


def test_regression_outputs_come_out_in_target_units(trained):
    recipe, folder = trained("diabetes", _recipe("mlp", {"name": "diabetes"}, width=16))
    result = export(folder)
    assert result.argmax_agreement is None
    raw = load_data(recipe.data.model_copy(update={"normalize": False}), recipe.seed)
    x, y = raw.test.x.numpy(), raw.test.y.numpy()

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    bare = session.run(None, {"inputs": x})[0]
    want = load_run(folder).predict(x).values
    np.testing.assert_allclose(bare[:, 0], want, atol=result.tolerance, rtol=0)
    # target units: diabetes progression is ~25..346 (mean ~150); standardized outputs would sit near 0
    assert abs(bare.mean() - y.mean()) < y.std()
    pred = load_onnx(result.path).predict(x)
    assert pred.values.shape == (len(x),)
    np.testing.assert_allclose(pred.values, want, atol=result.tolerance, rtol=0)
    assert json.loads(result.metadata_path.read_text())["folded"]["targets"].startswith("out * y_std + y_mean")


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_a_model_that_exports_differently_is_refused(trained, monkeypatch, tmp_path, fmt):
    _, folder = trained("mlp")
    forward = FoldedModel.forward
    monkeypatch.setattr(FoldedModel, "forward", lambda self, x: forward(self, x) + 1e-3)
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt2")
    with pytest.raises(ExportCheckFailed) as e:
        export(folder, format=fmt, out=out)
    assert e.value.max_abs_diff == pytest.approx(1e-3, rel=1e-2)
    assert "max |difference| 0.001" in str(e.value) and "allowed ≤ 0.0001" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # neither the model nor a temporary file is left


def test_a_changed_class_fails_the_check_even_within_the_tolerance(trained):
    _, folder = trained("mlp")
    pre = load_run(folder).preprocessing
    reference = np.array([[0.5, 0.50004, 0.0], [1.0, 0.0, 0.0]], np.float32)
    exported = np.array([[0.50004, 0.5, 0.0], [1.0, 0.0, 0.0]], np.float32)  # |diff| 4e-5, one argmax flips
    with pytest.raises(ExportCheckFailed, match=r"argmax agreement 50\.0% \(1 of 2"):
        check_parity(reference, exported, pre)
    assert check_parity(reference, reference, pre)[:2] == (0.0, 1.0)


class _CumMax(nn.Module):
    def __init__(self, spec: InputSpec, out: int):
        super().__init__()
        self.head = nn.Linear(spec.flat_size, out)

    def forward(self, x):
        return self.head(torch.cummax(x, dim=1).values)


@pytest.fixture
def cummax_family():
    """A user model family whose forward uses torch.cummax (aten.cummax has no ONNX translation)."""
    MODELS.register("cummax_test", NoKnobs, kinds=("tabular",))(lambda knobs, spec, n: _CumMax(spec, n))
    yield "cummax_test"
    MODELS._entries.pop("cummax_test")


def test_a_family_with_an_operator_onnx_lacks_says_which(cummax_family, tmp_path):
    train(validate_recipe(_recipe(cummax_family, {"name": "iris"})), out_dir=tmp_path)
    with pytest.raises(ExportUnsupported) as e:
        export(tmp_path, format="onnx")
    msg = str(e.value)
    assert e.value.operator == "aten.cummax"
    assert "model.family cummax_test cannot be exported to ONNX: operator aten.cummax" in msg
    assert "no translation" in msg and "--format torch-export" in msg
    assert not any(p.name.startswith(("model.onnx", ".model.onnx")) for p in tmp_path.iterdir())
    # the hint holds: the PyTorch-native format keeps the operator
    assert export(tmp_path, format="torch-export").max_abs_diff <= 1e-4


def test_without_the_training_data_the_check_says_it_used_random_inputs(tmp_path):
    from sklearn.datasets import load_iris

    iris = load_iris()
    npz = tmp_path / "iris.npz"
    np.savez(npz, x=iris.data.astype(np.float32), y=iris.target)
    run_dir = tmp_path / "run"
    train(validate_recipe(_recipe("linear", {"name": "npz", "path": str(npz)})), out_dir=run_dir)
    npz.unlink()  # the run folder is all a deployment has

    result = export(run_dir)
    assert not result.real_inputs and result.checked_samples == 256
    assert "random inputs drawn from the saved normalization statistics" in result.input_source
    assert "not real data" in result.input_source and str(npz) in result.input_source
    assert json.loads(result.metadata_path.read_text())["parity"]["real_inputs"] is False

    given = export(run_dir, inputs=iris.data[:40])  # real inputs from the user instead
    assert given.real_inputs and given.checked_samples == 40 and given.input_source == "the 40 inputs given"
    with pytest.raises(DataError, match=r"expected shape \(N, 4\)"):
        export(run_dir, inputs=iris.data[:, :3])


def test_bad_arguments_and_missing_files_are_named(trained, tmp_path):
    _, folder = trained("mlp")
    if not (folder / "model.onnx").exists():  # exported by the family test when the whole module runs
        export(folder)
    with pytest.raises(ConfigError, match="format: 'tflite' is not an export format; allowed: onnx, torch-export"):
        export(folder, format="tflite")
    with pytest.raises(ConfigError, match=r"must end in \.onnx"):
        export(folder, out=tmp_path / "model.pt2")
    with pytest.raises(DataError, match="holds no model.onnx; export it first with `dnntune export"):
        load_onnx(tmp_path)
    (tmp_path / "model.onnx").write_bytes((folder / "model.onnx").read_bytes())
    with pytest.raises(DataError, match=r"model\.onnx\.json: missing"):
        load_onnx(tmp_path / "model.onnx")
    with pytest.raises(DataError, match=r"expected shape \(N, 4\) \(iris: tabular, 4 features\), got \(4,\)"):
        load_onnx(folder).predict([5.1, 3.5, 1.4, 0.2])
