"""Tabular files with categories and missing values: the TabularEncoder (learned on the training split only),
the csv and parquet loaders, embeddings in the model, and the raw rows of predict, serve and export."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dnntune import load_run, train, validate_recipe
from dnntune.cli import main
from dnntune.data import load_data, prepare
from dnntune.data.core import RawData, _checked, _partition
from dnntune.data.preprocess import Preprocessing
from dnntune.data.tabular import TabularEncoder, embedding_size
from dnntune.errors import DataError
from dnntune.models.core import InputSpec, build_model
from dnntune.models.dense import EmbeddingFront

COLUMNS = ["age", "income", "plan", "city", "label"]


def rows(n: int = 160, seed: int = 0) -> list[list[str]]:
    """A learnable table: the label follows plan and age; city has 24 levels; missing cells of every kind."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        plan = ["basic", "plus", "pro"][i % 3]
        age = int(rng.integers(20, 70))
        label = "churn" if (plan == "basic") != (age > 45) else "stay"
        cells = [str(age), f"{rng.normal(50, 10):.1f}", plan, f"city{int(rng.integers(0, 24))}", label]
        if i % 7 == 0:
            cells[0] = ["", "NA", "?"][i % 3]
        if i % 11 == 0:
            cells[2] = "NaN"
        out.append(cells)
    return out


def write_csv(path: Path, table: list[list[str]], header=COLUMNS) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(table)
    return path


def recipe(data: dict, **sections) -> dict:
    raw = {"seed": 0, "data": data, "model": {"family": "mlp", "width": 16, "depth": 1},
           "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 3, "batch_size": 32}}
    raw.update(sections)
    return raw


def section(normalize: bool = True):
    """The data section prepare() reads (no validation split: the training split is every row of ``x``)."""
    return validate_recipe({"data": {"name": "iris", "normalize": normalize, "val_fraction": 0},
                            "model": {"family": "linear"}}).data


def raw_data(x, y, x_test, y_test, types, **enc) -> RawData:
    cols = [f"c{j}" for j in range(len(types))]
    obj = lambda a: np.array(a, dtype=object)  # noqa: E731
    return RawData(obj(x), np.array(y), "classification", "tabular", x_test=obj(x_test), y_test=np.array(y_test),
                   class_names=["a", "b"], feature_names=cols, featurizer=TabularEncoder(cols, types, **enc))


# --- learned on the training split only ---------------------------------------------------------------


def test_a_level_seen_only_in_the_test_split_is_unknown():
    # c0: 2 levels one-hot; c1: 3 levels embedded (max_onehot 2); "violet" / "zeta" only in the test split
    x = [["red", "x"], ["blue", "y"], ["red", "z"], ["blue", "x"]] * 5
    x_test = [["violet", "zeta"], ["red", "y"]]
    d = prepare(raw_data(x, [0, 1] * 10, x_test, [0, 1], ["categorical", "categorical"], max_onehot=2),
                section(), seed=0)
    fz = d.featurizer
    assert fz.feature_names_out() == ["c0=blue", "c0=red", "c1#index"]
    assert fz.fitted[0]["levels"] == ["blue", "red"] and fz.fitted[1]["levels"] == ["x", "y", "z"]
    test = d.test.x.numpy()
    assert test[0].tolist() == [0.0, 0.0, 0.0]  # unknown: no one-hot level set, embedding index 0
    assert test[1].tolist() == [0.0, 1.0, 2.0]  # red; y is level 2 of 3 (0 is unknown)
    assert d.input_info["embeddings"] == [{"index": 2, "column": "c1", "cardinality": 4, "dim": embedding_size(4)}]
    # one-hot and index features are not standardized; with data.normalize the numbers would be
    assert d.mean.tolist() == [0.0, 0.0, 0.0] and d.std.tolist() == [1.0, 1.0, 1.0]


def test_imputation_statistics_from_train_only_with_missing_indicators():
    # c0 has missing cells in training (indicator); c1 only in the test split (imputed, no indicator)
    x = [["1", "10"], ["2", "20"], ["", "30"], ["4", "40"], ["NA", "50"]] * 4
    x_test = [["?", ""], ["1000", "1000"]]  # extreme test values must not move the statistics
    d = prepare(raw_data(x, [0, 1, 0, 1, 0] * 4, x_test, [0, 1], ["numeric", "numeric"]), section(False), seed=0)
    fz = d.featurizer
    assert fz.feature_names_out() == ["c0", "c0=missing", "c1"]
    assert fz.fitted[1] == {"median": 30.0, "indicator": False}
    assert fz.fitted[0]["median"] == 2.0 and fz.fitted[0]["indicator"] is True
    assert d.test.x.numpy().tolist() == [[2.0, 1.0, 30.0], [1000.0, 0.0, 1000.0]]
    normalized = prepare(raw_data(x, [0, 1, 0, 1, 0] * 4, x_test, [0, 1], ["numeric", "numeric"]), section(),
                         seed=0)
    assert normalized.featurizer.normalize_mask().tolist() == [True, False, True]
    assert normalized.std[1] == 1.0 and normalized.mean[1] == 0.0  # the indicator stays 0/1


def test_the_encoder_is_fitted_on_the_training_rows_of_a_csv(tmp_path):
    # every row has its own city: the encoder's levels are exactly those of the training split
    table = [r[:3] + [f"only{i}", r[4]] for i, r in enumerate(rows())]
    path = write_csv(tmp_path / "t.csv", table)
    d = load_data(validate_recipe(recipe({"name": "csv", "path": str(path), "target": "label"})).data, 0)
    city = d.featurizer.fitted[3]
    assert len(city["levels"]) == len(d.train) and city["encoding"] == "embedding"
    x_tr, _, x_te, *_ = _partition(*_split_args(path))
    assert set(city["levels"]) == {str(c) for c in x_tr[:, 3]} and not set(city["levels"]) & set(x_te[:, 3])
    assert (d.test.x[:, d.input_info["embeddings"][0]["index"]] == 0).all()  # every test city is unknown
    assert "age=missing" in d.input_info["features"] and "plan=missing" in d.input_info["features"]


def _split_args(path: Path, seed: int = 0):
    r = validate_recipe(recipe({"name": "csv", "path": str(path), "target": "label"}))
    from dnntune.data import DATASETS

    raw = DATASETS.get("csv").builder(r.data.knobs)
    x, y = _checked(raw, "csv")
    return raw, x, y, r.data, seed, None


def test_a_file_of_plain_numbers_keeps_the_numeric_path(tmp_path):
    path = write_csv(tmp_path / "n.csv", [[str(i), str(i % 3), str(i % 2)] for i in range(30)], ["a", "b", "y"])
    d = load_data(validate_recipe(recipe({"name": "csv", "path": str(path), "target": "y"})).data, 0)
    assert d.featurizer is None and d.input_shape == (2,)


def test_declared_categorical_numbers_and_json_numbers_are_the_same_level():
    enc = TabularEncoder(["zip"], ["categorical"]).fit(np.array([["10115"], ["80331"], ["3"]], dtype=object))
    assert enc.fitted[0]["levels"] == ["10115", "3", "80331"]
    assert enc.transform(np.array([[3.0], [80331], ["10115"]], dtype=object)).tolist() == [
        [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


def test_the_encoder_round_trips_through_preprocess_json(tmp_path):
    path = write_csv(tmp_path / "t.csv", rows())
    d = load_data(validate_recipe(recipe({"name": "csv", "path": str(path), "target": "label",
                                          "max_onehot": 2})).data, 0)
    p = Preprocessing.from_files(Preprocessing.from_data(d).to_files())
    assert p.feature_names == ["age", "income", "plan", "city"] and p.input_shape == d.input_shape
    raw = np.array([["33", "", "pro", "city5"], ["NA", "41.5", "gold", "nowhere"]], dtype=object)
    assert torch.equal(p.transform_inputs(raw), Preprocessing.from_data(d).transform_inputs(raw))
    assert p.input_info == d.input_info


# --- the model -----------------------------------------------------------------------------------------


def test_embedding_front_unknown_is_zero_and_indices_are_clamped():
    front = EmbeddingFront(3, [{"index": 1, "column": "c", "cardinality": 4, "dim": 2}])
    out = front(torch.tensor([[5.0, 0.0, 7.0], [5.0, 9.0, 7.0], [5.0, 3.0, 7.0]]))
    assert out.shape == (3, 4) and out[:, :2].tolist() == [[5.0, 7.0]] * 3
    assert out[0, 2:].tolist() == [0.0, 0.0]  # unknown (0): the fixed zero row
    assert torch.equal(out[1, 2:], out[2, 2:])  # 9 is clamped to the last row, 3
    spec = InputSpec("tabular", (3,), info={"embeddings": [{"index": 1, "column": "c", "cardinality": 4, "dim": 2}]})
    for family in ("mlp", "linear"):
        r = validate_recipe(recipe({"name": "iris"}, model={"family": family}))
        model = build_model(r.model, spec, 2)
        assert isinstance(model.front, EmbeddingFront) and model(torch.zeros(5, 3)).shape == (5, 2)
    assert not hasattr(build_model(r.model, InputSpec("tabular", (3,)), 2), "front")  # plain data: no front


# --- train → run folder → predict / serve / export ----------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run on a CSV with text labels, categories (one of them embedded) and missing cells."""
    tmp = tmp_path_factory.mktemp("tabular")
    path = write_csv(tmp / "train.csv", rows(240))
    raw = recipe({"name": "csv", "path": str(path), "target": "label", "max_onehot": 4}, train={"epochs": 20})
    train(validate_recipe(raw), out_dir=tmp / "run")
    return tmp, path, raw


def test_string_labels_round_trip_into_summary_predictions_and_the_confusion_matrix(trained):
    tmp, path, raw = trained
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert summary["class_names"] == ["churn", "stay"]
    assert json.loads((tmp / "run" / "preprocess.json").read_text())["class_names"] == ["churn", "stay"]
    from dnntune.report._figures import confusion

    fig = confusion(summary["metrics"]["test"]["confusion_matrix"], summary["class_names"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["churn", "stay"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["churn", "stay"]


def test_predict_on_a_raw_csv_reproduces_the_test_metrics(trained, capsys):
    tmp, path, raw = trained
    data, x, y, sec, seed, fold = _split_args(path)
    sec = validate_recipe(raw).data
    _, _, x_test, _, _, y_test = _partition(data, x, y, sec, seed, fold)
    names = data.class_names
    new = write_csv(tmp / "new.csv", [list(r) + [names[t]] for r, t in zip(x_test, y_test)])
    assert main(["predict", str(tmp / "run"), str(new), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    labels = [r["label"] for r in pred]
    accuracy = float(np.mean([lab == names[t] for lab, t in zip(labels, y_test)]))
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert accuracy == pytest.approx(summary["metrics"]["test"]["accuracy"])
    assert summary["metrics"]["test"]["accuracy"] > 0.6  # it learned something from plan and age
    # the python API on raw rows, unseen levels and missing cells included
    run = load_run(tmp / "run")
    p = run.predict(np.array([["33", "", "gold", "atlantis"], [None, 41.5, "pro", "city3"]], dtype=object))
    assert set(p.labels) <= {"churn", "stay"} and len(p.labels) == 2


@pytest.mark.parametrize("change, message", [
    ({"age": "old"}, "column 'age' was numeric in training, but holds the text 'old' at line 3"),
    ({"plan": None}, "missing feature column(s) 'plan'"),
])
def test_a_column_whose_type_changed_is_a_clear_error(trained, capsys, change, message):
    tmp, _, _ = trained
    table = rows(4, seed=5)
    header = list(COLUMNS)
    (col, value), = change.items()
    j = header.index(col)
    if value is None:
        header.pop(j)
        table = [r[:j] + r[j + 1:] for r in table]
    else:
        table[1][j] = value
    new = write_csv(tmp / "changed.csv", table, header)
    assert main(["predict", str(tmp / "run"), str(new)]) == 2
    err = capsys.readouterr().err
    assert f"{new}: " in err and message in err and "Traceback" not in err
    run = load_run(tmp / "run")
    if value is not None:  # the API names the column too
        with pytest.raises(DataError, match="column 'age': was numeric in training"):
            run.predict(np.array([["old", "1", "pro", "city1"]], dtype=object))


def test_serve_requests_carry_strings_and_nulls(trained):
    from dnntune.deploy._serve_app import BadRequest, parse_inputs

    tmp, _, _ = trained
    run = load_run(tmp / "run")
    pre = run.preprocessing
    doc = {"inputs": [{"plan": "pro", "city": "city2", "age": None, "income": 55.0},
                      {"age": 61, "income": "NA", "plan": None, "city": "unseen"}]}
    x = parse_inputs(doc, tuple(pre.input_shape), pre.feature_names, raw_cells=True)
    assert x.dtype == object and x.shape == (2, 4) and x[0].tolist() == [None, 55.0, "pro", "city2"]
    assert len(run.predict(x).labels) == 2
    one = parse_inputs({"inputs": [40, 50.5, "basic", None]}, tuple(pre.input_shape), pre.feature_names,
                       raw_cells=True)
    assert one.shape == (1, 4)
    with pytest.raises(BadRequest, match=r"inputs\[0\]: expected 4 cells"):
        parse_inputs({"inputs": [[1, 2]]}, tuple(pre.input_shape), pre.feature_names, raw_cells=True)
    with pytest.raises(DataError, match="column 'age'"):
        run.predict(parse_inputs({"inputs": [["x", 1, "pro", "c"]]}, (4,), pre.feature_names, raw_cells=True))


def test_export_to_onnx_with_embeddings_passes_the_parity_check(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from dnntune import export

    tmp, _, _ = trained
    assert load_run(tmp / "run").preprocessing.input_info["embeddings"]  # city (24 levels) is embedded
    result = export(tmp / "run", out=tmp_path / "m.onnx")
    assert result.real_inputs and result.max_abs_diff <= result.tolerance and result.argmax_agreement == 1.0
    raw = np.array([["33", "", "gold", "atlantis"], ["50", "41.5", "pro", "city3"]], dtype=object)
    again = export(tmp / "run", out=tmp_path / "raw.onnx", inputs=raw)  # raw rows: encoded, then checked
    assert again.checked_samples == 2
    from dnntune.deploy import load_onnx

    onnx_run = load_onnx(tmp_path / "m.onnx")  # predicts raw rows too: the encoder is in model.onnx.json
    torch_pred, onnx_pred = load_run(tmp / "run").predict(raw), onnx_run.predict(raw)
    assert onnx_pred.labels == torch_pred.labels
    np.testing.assert_allclose(onnx_pred.probabilities, torch_pred.probabilities, atol=1e-5)


# --- parquet -------------------------------------------------------------------------------------------


def _parquet(path: Path, table: list[list[str]]) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    cols = list(zip(*table))
    ages = [None if c in ("", "NA", "?") else int(c) for c in cols[0]]
    pq.write_table(pa.table({"age": ages, "income": [float(c) for c in cols[1]], "plan": list(cols[2]),
                             "city": list(cols[3]), "member": [i % 2 == 0 for i in range(len(table))],
                             "label": list(cols[4])}), path)
    return path


def test_parquet_trains_with_categories_and_nulls(tmp_path):
    path = _parquet(tmp_path / "t.parquet", rows())
    r = validate_recipe(recipe({"name": "parquet", "path": str(path), "target": "label"}))
    d = load_data(r.data, 0)
    assert d.class_names == ["churn", "stay"] and "age=missing" in d.input_info["features"]
    assert d.featurizer.types == ["numeric", "numeric", "categorical", "categorical", "numeric"]  # bool: 0/1
    train(r, out_dir=tmp_path / "run")
    run = load_run(tmp_path / "run")
    from dnntune.deploy._inputs import read_inputs

    inputs = read_inputs(path, run.preprocessing, run.recipe)  # predict reads Parquet too
    assert inputs.format == "parquet" and len(run.predict(inputs.x).labels) == len(rows())


def test_parquet_without_pyarrow_exits_2_naming_the_file(tmp_path, monkeypatch, capsys):
    path = _parquet(tmp_path / "t.parquet", rows(20))
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(recipe({"name": "parquet", "path": str(path), "target": "label"})))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow...` raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["train", str(f), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: reading Parquet files needs pyarrow" in err and "pip install 'dnntune[parquet]'" in err
    assert "Traceback" not in err


# --- tune and report -----------------------------------------------------------------------------------


def test_tune_searches_the_encoding_and_reports(tmp_path, monkeypatch):
    from dnntune.report import _figures
    from dnntune.search.defaults import complete_experiment
    from dnntune.search.tune import tune

    path = write_csv(tmp_path / "t.csv", rows(120))
    exp = complete_experiment({"data": {"name": "csv", "path": str(path), "target": "label"},
                               "search": {"n_trials": 2, "sampler": "random"}})
    assert exp["data"]["max_onehot"] == {"choice": [4, 16, 64]} and "choice" in exp["data"]["embed_dim"]
    exp["data"]["max_onehot"] = {"choice": [2, 64]}  # 2: city and plan embedded; 64: all one-hot
    exp["train"] = {**exp["train"], "epochs": 1}
    seen = []
    monkeypatch.setattr(_figures, "confusion", lambda m, labels=None, _f=_figures.confusion: (
        seen.append(labels), _f(m, labels))[1])
    summary = tune(exp, tmp_path / "study", quiet=True, tracker="none")
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 2
    assert (tmp_path / "study" / "report" / "index.html").is_file() and seen == [["churn", "stay"]]
    for trial in sorted((tmp_path / "study" / "trials").iterdir()):  # each trial encoded with its own knobs
        chosen = yaml.safe_load((trial / "recipe.yaml").read_text())["data"]["max_onehot"]
        state = json.loads((trial / "preprocess.json").read_text())["featurizer"]["state"]
        assert state["max_onehot"] == chosen
        embedded = [c for c, f in zip(state["columns"], state["fitted"]) if f.get("encoding") == "embedding"]
        assert embedded == (["plan", "city"] if chosen == 2 else [])


def test_noise_augmentation_leaves_encoded_categories_exact(tmp_path):
    from dnntune.data.augment import build_augmenter

    path = write_csv(tmp_path / "t.csv", rows())
    r = validate_recipe(recipe({"name": "csv", "path": str(path), "target": "label", "max_onehot": 4},
                               augment={"noise": 0.5}))
    d = load_data(r.data, 0)
    x = d.train.x[:32]
    noisy, _ = build_augmenter(r.augment, d)(x, d.train.y[:32])
    numeric = torch.as_tensor(d.featurizer.normalize_mask())
    assert torch.equal(noisy[:, ~numeric], x[:, ~numeric])  # one-hot, indicators, embedding indices
    assert not torch.equal(noisy[:, numeric], x[:, numeric])


def test_regression_with_categories_predicts_in_target_units(tmp_path):
    rng = np.random.default_rng(3)
    table = []
    for i in range(150):
        kind = ["small", "large"][i % 2]
        size = rng.normal(10, 2)
        price = 100 * (kind == "large") + 5 * size + rng.normal(0, 1)
        table.append([f"{size:.2f}" if i % 9 else "", kind, f"{price:.2f}"])
    path = write_csv(tmp_path / "r.csv", table, ["size", "kind", "price"])
    raw = recipe({"name": "csv", "path": str(path), "target": "price"}, model={"family": "linear"},
                 optim={"name": "adam", "lr": 0.05}, train={"epochs": 60, "batch_size": 16})
    train(validate_recipe(raw), out_dir=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "class_names" not in summary and summary["metrics"]["test"]["rmse"] < 15  # the target's std is ~50
    from dnntune.data import DATASETS

    r = validate_recipe(raw)
    data = DATASETS.get("csv").builder(r.data.knobs)
    x, y = _checked(data, "csv")
    _, _, x_test, _, _, y_test = _partition(data, x, y, r.data, 0, None)
    values = load_run(tmp_path / "run").predict(x_test).values
    rmse = float(np.sqrt(np.mean((values.ravel() - y_test.ravel()) ** 2)))
    assert rmse == pytest.approx(summary["metrics"]["test"]["rmse"], rel=1e-4)


def _post(app, path: str, doc) -> tuple[int, dict]:
    """One request through the ASGI app in-process (no server, no HTTP client library)."""
    import asyncio

    body = json.dumps(doc).encode()
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_the_serve_app_takes_rows_with_strings_and_nulls(trained):
    pytest.importorskip("fastapi")
    from dnntune.deploy._serve_app import create_app

    tmp, _, _ = trained
    run = load_run(tmp / "run")
    app = create_app(run, batch_wait_ms=None)
    status, out = _post(app, "/predict", {"inputs": [{"age": None, "income": "NA", "plan": "pro", "city": "city1"},
                                                     {"age": 30, "income": 40.5, "plan": "mars", "city": None}]})
    raw = np.array([[None, "NA", "pro", "city1"], [30, 40.5, "mars", None]], dtype=object)
    assert status == 200 and out["labels"] == run.predict(raw).labels
    status, out = _post(app, "/predict", {"inputs": [{"age": "old", "income": 1, "plan": "pro", "city": "c"}]})
    assert status == 422 and "column 'age'" in out["detail"]
