"""Run folders describe themselves: ``load_run`` predicts raw inputs without the training data."""

import json
import shutil

import numpy as np
import pytest
import torch

from dnntune import load_run
from dnntune.config import validate_recipe
from dnntune.data import load_data
from dnntune.data.preprocess import Preprocessing, write_preprocessing
from dnntune.engine import train
from dnntune.engine.metrics import compute_metrics
from dnntune.errors import DataError, UserError

RECIPES = {
    "iris": {"data": {"name": "iris"}, "model": {"family": "mlp", "width": 16}, "train": {"epochs": 3}},
    "digits": {"data": {"name": "digits"}, "model": {"family": "cnn2d", "channels": 8, "depth": 2},
               "train": {"epochs": 2}},
    "diabetes": {"data": {"name": "diabetes"}, "model": {"family": "mlp", "width": 16}, "train": {"epochs": 3}},
}


def _train(raw: dict, folder):
    recipe = validate_recipe(raw)
    train(recipe, out_dir=folder)
    return recipe


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One trained run folder per dataset, shared by the tests of this module (read-only)."""
    out = {}
    for name, raw in RECIPES.items():
        folder = tmp_path_factory.mktemp(name)
        out[name] = (_train(raw, folder), folder)
    return out


def _raw_and_prepared(recipe):
    raw = load_data(recipe.data.model_copy(update={"normalize": False}), recipe.seed)
    return raw, load_data(recipe.data, recipe.seed)


def test_train_writes_the_preprocessing_into_the_run_folder(tmp_path):
    recipe = validate_recipe({**RECIPES["iris"], "train": {"epochs": 1}})
    train(recipe, out_dir=tmp_path)
    assert (tmp_path / "preprocess.json").exists() and (tmp_path / "preprocess.safetensors").exists()
    assert Preprocessing.load(tmp_path) == Preprocessing.from_data(load_data(recipe.data, recipe.seed))


@pytest.mark.parametrize("name", list(RECIPES))
def test_predict_on_raw_test_inputs_reproduces_the_runs_test_metrics(runs, name):
    recipe, folder = runs[name]
    raw, prepared = _raw_and_prepared(recipe)
    run = load_run(folder)
    assert run.task == prepared.task and run.input_shape == prepared.input_shape
    # the split does not depend on normalization: the same test samples in the same order
    if run.task == "classification":
        assert torch.equal(raw.test.y, prepared.test.y)
    else:
        assert torch.equal((raw.test.y - prepared.y_mean) / prepared.y_std, prepared.test.y)
    # raw inputs are normalized exactly as training normalized them
    assert torch.equal(run.preprocessing.transform_inputs(raw.test.x.numpy()), prepared.test.x)

    pred = run.predict(raw.test.x.numpy())
    assert len(pred) == len(raw.test) and pred.outputs.shape == (len(raw.test), prepared.num_outputs)
    if run.task == "classification":
        targets = raw.test.y
    else:  # the trainer's targets in their own units: scaled and unscaled again
        targets = prepared.test.y * prepared.y_std + prepared.y_mean
    got = compute_metrics(run.task, torch.from_numpy(pred.outputs), targets, prepared.num_outputs, confusion=True)
    want = json.loads((folder / "summary.json").read_text())["metrics"]["test"]
    assert run.summary["metrics"]["test"] == want
    for key, value in got.items():
        if key in ("accuracy", "confusion_matrix"):
            assert value == want[key], key
        else:
            assert value == pytest.approx(want[key], rel=1e-6), key
    if run.task == "regression":
        assert pred.values.shape == raw.test.y.shape and pred.labels is None
        # against the raw targets (never scaled) the metrics agree to float32 rounding
        raw_metrics = compute_metrics("regression", torch.from_numpy(pred.values), raw.test.y, 1)
        assert raw_metrics["mse"] == pytest.approx(want["mse"], rel=1e-5)


@pytest.mark.parametrize("name", ["iris", "digits"])
def test_classification_predictions_carry_class_names_and_probabilities(runs, name):
    recipe, folder = runs[name]
    raw, prepared = _raw_and_prepared(recipe)
    run = load_run(folder)
    names = {"iris": ["setosa", "versicolor", "virginica"], "digits": [str(i) for i in range(10)]}[name]
    assert run.class_names == names
    pred = run.predict(raw.test.x[:20])  # a torch tensor works as well as a numpy array
    assert pred.labels == [names[i] for i in pred.indices]
    assert np.array_equal(pred.indices, pred.outputs.argmax(1))
    assert pred.probabilities.shape == (20, len(names))
    assert np.allclose(pred.probabilities.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(pred.probabilities.argmax(1), pred.indices)


def test_without_class_names_labels_are_the_class_indices():
    p = Preprocessing("toy", "classification", "tabular", (2,), 3, class_names=None)
    pred = p.outputs_to_predictions(torch.tensor([[0.0, 0.0, 5.0], [3.0, 0.0, 0.0]]))
    assert pred.labels == ["2", "0"] and pred.indices.tolist() == [2, 0]


def test_a_wrong_input_shape_names_the_expected_and_the_given_shape(runs):
    _, folder = runs["digits"]
    run = load_run(folder)
    expected = r"expected shape \(N, 1, 8, 8\) \(digits: image, 1×8×8\), got \(3, 64\); reshape to \(N, 1, 8, 8\)"
    with pytest.raises(DataError, match=expected):
        run.predict(np.zeros((3, 64), dtype=np.float32))
    with pytest.raises(DataError, match=r"got \(1, 8, 8\); one sample: add a batch dimension"):
        run.predict(np.zeros((1, 8, 8)))
    iris = load_run(runs["iris"][1])
    with pytest.raises(DataError, match=r"expected shape \(N, 4\) \(iris: tabular, 4 features\), got \(2, 5\)"):
        iris.predict(np.zeros((2, 5)))
    with pytest.raises(DataError, match="NaN/inf"):
        iris.predict([[1.0, float("nan"), 1.0, 1.0]])
    with pytest.raises(DataError, match="real numbers"):
        iris.predict([["a", "b", "c", "d"]])


def test_a_folder_without_the_run_files_is_a_clear_error(runs, tmp_path):
    with pytest.raises(DataError, match="not a dnntune run folder"):
        load_run(tmp_path)
    with pytest.raises(DataError, match="no such run folder"):
        load_run(tmp_path / "missing")

    folder = tmp_path / "old"
    shutil.copytree(runs["iris"][1], folder)
    (folder / "preprocess.json").unlink()  # as written by a dnntune before run folders described themselves
    with pytest.raises(DataError) as e:
        load_run(folder)
    assert str(e.value).startswith(f"{folder}: not a dnntune run folder (no preprocess.json)")

    write_preprocessing(folder, load_data(validate_recipe(RECIPES["iris"]).data))  # repaired from the data
    assert load_run(folder).class_names[0] == "setosa"

    shutil.copy(runs["diabetes"][1] / "preprocess.safetensors", folder)  # a file of another run
    with pytest.raises(DataError, match="preprocess.safetensors: does not match"):
        load_run(folder)
    write_preprocessing(folder, load_data(validate_recipe(RECIPES["iris"]).data))

    (folder / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(DataError, match=r"model\.safetensors: not a readable safetensors file"):
        load_run(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(DataError, match=r"model\.safetensors: missing"):
        load_run(folder)
    shutil.copy(runs["diabetes"][1] / "model.safetensors", folder)  # weights of another model
    with pytest.raises(DataError, match="do not fit the model"):
        load_run(folder)
    shutil.copy(runs["iris"][1] / "model.safetensors", folder)
    (folder / "recipe.yaml").write_text("model: [unclosed")
    with pytest.raises(DataError, match=r"recipe\.yaml: not valid YAML"):
        load_run(folder)
    (folder / "recipe.yaml").unlink()
    with pytest.raises(DataError, match=r"recipe\.yaml: missing"):
        load_run(folder)


def test_a_tune_run_folder_resolves_to_its_best_model_and_trial_folders_load(runs, tmp_path):
    _, folder = runs["iris"]
    shutil.copytree(folder, tmp_path / "best")
    shutil.copytree(folder, tmp_path / "trials" / "0003")
    (tmp_path / "summary.json").write_text(json.dumps({"best": {"trial": 3}}))
    x = load_data(validate_recipe(RECIPES["iris"]).data.model_copy(update={"normalize": False})).test.x
    want = load_run(folder).predict(x).outputs
    run = load_run(tmp_path)
    assert run.path == tmp_path / "best"
    assert np.array_equal(run.predict(x).outputs, want)
    assert np.array_equal(load_run(tmp_path / "trials" / "0003").predict(x).outputs, want)


@pytest.mark.parametrize("final", ["retrain", "best_trial"])
def test_a_real_studys_best_model_reproduces_its_test_metrics(tmp_path, final):
    from dnntune.search import tune

    exp = {"data": {"name": "iris"}, "model": {"family": "mlp", "width": {"int": [4, 16]}},
           "train": {"epochs": 2}, "search": {"n_trials": 2, "seed": 0, "pruner": "none", "final": final}}
    summary = tune(exp, tmp_path, quiet=True)
    run = load_run(tmp_path)
    assert run.path == tmp_path / "best"
    raw = load_data(run.recipe.data.model_copy(update={"normalize": False}), run.recipe.seed)
    pred = run.predict(raw.test.x)
    got = compute_metrics("classification", torch.from_numpy(pred.outputs), raw.test.y, 3, confusion=True)
    assert got["accuracy"] == summary["test"]["accuracy"]
    assert got["confusion_matrix"] == summary["test"]["confusion_matrix"]
    assert got["log_loss"] == pytest.approx(summary["test"]["log_loss"], rel=1e-6)
    for trial in sorted((tmp_path / "trials").iterdir()):
        assert load_run(trial).class_names == ["setosa", "versicolor", "virginica"]


def test_device_auto_and_a_bad_device(runs):
    _, folder = runs["iris"]
    assert load_run(folder, device="auto").device.type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="device: cuda requested but CUDA is not available"):
            load_run(folder, device="cuda")


def test_preprocessing_round_trips_through_its_files(runs):
    recipe, folder = runs["digits"]
    p = Preprocessing.load(folder)
    assert p == Preprocessing.from_data(load_data(recipe.data, recipe.seed))
    assert (p.kind, p.input_shape, p.num_outputs, tuple(p.mean.shape)) == ("image", (1, 8, 8), 10, (1, 1, 1))
    assert Preprocessing.from_files(p.to_files()) == p
    d = load_run(runs["diabetes"][1]).preprocessing
    assert d.task == "regression" and d.target_shape == () and d.y_std is not None
