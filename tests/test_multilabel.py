"""Multi-label classification: targets from files, BCE, metrics, thresholds chosen on validation only,
predictions with label names, run folders, train / tune / report end to end."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss

from dnntune import load_run
from dnntune.cli import main
from dnntune.config import validate_recipe
from dnntune.data import Split, load_data
from dnntune.data.core import RawData, prepare
from dnntune.data.files import CSVKnobs, NPZKnobs, csv_file, npz_file
from dnntune.data.preprocess import Preprocessing
from dnntune.deploy._output import prediction_rows
from dnntune.deploy._serve_app import _slice, prediction_json
from dnntune.engine import Trainer, build_loss, train
from dnntune.engine.metrics import choose_thresholds, compute_metrics, default_metric, direction
from dnntune.errors import ConfigError, DataError
from tests.conftest import write_recipe

ML = {"seed": 0, "data": {"name": "multilabel", "n_samples": 300, "n_labels": 4},
      "model": {"family": "mlp", "width": 16, "depth": 1}, "optim": {"name": "adam", "lr": 0.01},
      "train": {"epochs": 2, "batch_size": 32}}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- targets from files -------------------------------------------------------------------------------------------


def _csv(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_several_zero_one_columns_and_a_list_column_give_the_same_targets(tmp_path):
    cols = _csv(tmp_path, "cols.csv", "x1,x2,a,b,c\n1,2,1,1,0\n2,3,0,0,0\n3,4,0,0,1\n4,5,1,0,1\n")
    lists = _csv(tmp_path, "lists.csv", "x1,x2,tags\n1,2,b|a\n2,3,\n3,4,c\n4,5,a|c\n")
    by_cols = csv_file(CSVKnobs(path=str(cols), target=["a", "b", "c"]))  # task auto: several 0/1 columns
    by_list = csv_file(CSVKnobs(path=str(lists), target="tags", task="multilabel", label_separator="|"))
    for raw in (by_cols, by_list):
        assert raw.task == "multilabel" and raw.class_names == ["a", "b", "c"] and raw.feature_names == ["x1", "x2"]
        assert raw.y.dtype == np.float32
    assert np.array_equal(by_cols.y, by_list.y)
    assert np.array_equal(by_cols.y, [[1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 1]])


@pytest.mark.parametrize("text, knobs, message", [
    ("x,a,b\n1,0,2\n2,1,0\n3,0,1\n", {"target": ["a", "b"]}, "column 'b' must hold 0 or 1, found '2' at line 2"),
    ("x,a,b\n1,0,1\n2,1,0\n3,0,1\n", {"target": ["a", "b"], "task": "regression"}, "are for task: multilabel"),
    ("x,a\n1,0\n2,1\n3,0\n", {"target": "a", "task": "multilabel"}, "one 0/1 column"),
    ("x,t\n1,a\n2,a\n3,\n", {"target": "t", "task": "multilabel"}, "has only the label 'a'"),
    ("x,t\n1,a;;b\n2,a\n3,b\n", {"target": "t", "task": "multilabel"}, "an empty label in 'a;;b' at line 2"),
])
def test_csv_bad_multilabel_targets_name_the_file_and_column(tmp_path, text, knobs, message):
    path = _csv(tmp_path, "bad.csv", text)
    with pytest.raises(DataError, match="bad.csv") as e:
        csv_file(CSVKnobs(path=str(path), **knobs))
    assert message in str(e.value)


def test_a_label_missing_from_the_training_split_is_refused(tmp_path):
    y = np.zeros((40, 3), np.float32)
    y[:20, 0], y[20:, 1], y[:5, 2] = 1, 1, 1
    raw = RawData(np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32), y, "multilabel", "tabular",
                  x_test=np.zeros((4, 2), np.float32), y_test=np.ones((4, 3), np.float32), class_names=["a", "b", "c"])
    section = validate_recipe({"data": {"name": "iris", "val_fraction": 0.0}, "model": {"family": "linear"}}).data
    prepare(raw, section, 0)  # every label occurs in training
    raw.y[:, 2] = 0
    with pytest.raises(DataError, match="label\\(s\\) 'c' never occur in the training split"):
        prepare(raw, section, 0)


def test_npz_two_dimensional_zero_one_targets(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(12, 3)), y=rng.integers(0, 2, (12, 3)))
    raw = npz_file(NPZKnobs(path=str(tmp_path / "d.npz"), task="multilabel"))
    assert raw.task == "multilabel" and raw.class_names == ["0", "1", "2"] and raw.y.shape == (12, 3)
    np.savez(tmp_path / "bad.npz", x=rng.normal(size=(4, 3)), y=np.array([[0, 1], [2, 0], [1, 1], [0, 0]]))
    with pytest.raises(DataError, match="bad.npz.*sample 1, label 0 is 2"):
        npz_file(NPZKnobs(path=str(tmp_path / "bad.npz"), task="multilabel"))


def test_bad_targets_are_exit_status_2_from_the_cli_without_a_traceback(tmp_path, capsys):
    path = _csv(tmp_path, "bad.csv", "x,a,b\n1,0,1\n2,1,7\n3,0,1\n4,1,0\n")
    recipe = write_recipe(tmp_path / "r.yaml", {**ML, "data": {"name": "csv", "path": str(path), "target": ["a", "b"]}})
    code, _, err = run(capsys, "train", str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2 and "bad.csv: multi-label target column 'b' must hold 0 or 1, found '7'" in err
    assert "Traceback" not in err
    never = _csv(tmp_path, "never.csv", "x,a,b\n" + "".join(f"{i},{i % 2},0\n" for i in range(20)))
    data = {"name": "csv", "path": str(never), "target": ["a", "b"]}
    recipe = write_recipe(tmp_path / "r2.yaml", {**ML, "data": data})
    code, _, err = run(capsys, "train", str(recipe), "--out", str(tmp_path / "run2"), "--quiet")
    assert code == 2 and "never.csv): label(s) 'b' never occur in the training split" in err and "Traceback" not in err


# --- loss and metrics -----------------------------------------------------------------------------------------------


def _case():
    """Logits and 0/1 targets where F1, subset accuracy and AP all differ from their trivial values."""
    gen = torch.Generator().manual_seed(0)
    y = (torch.rand(60, 4, generator=gen) < 0.4).float()
    logits = 2.0 * (y - 0.5) + 1.5 * torch.randn(60, 4, generator=gen)
    return logits, y


def test_metrics_match_scikit_learn():
    logits, y = _case()
    t = [0.3, 0.5, 0.6, 0.7]
    got = compute_metrics("multilabel", logits, y, 4, confusion=True, thresholds=t)
    p = torch.sigmoid(logits).numpy()
    d = (p >= np.array(t, np.float32)).astype(int)
    yy = y.numpy().astype(int)
    assert got["f1_micro"] == pytest.approx(f1_score(yy, d, average="micro"))
    assert got["f1_macro"] == pytest.approx(f1_score(yy, d, average="macro"))
    assert got["subset_accuracy"] == pytest.approx(accuracy_score(yy, d))
    assert got["hamming_loss"] == pytest.approx(hamming_loss(yy, d))
    assert got["average_precision"] == pytest.approx(average_precision_score(yy, p, average="macro"))
    assert got["log_loss"] == pytest.approx(float(torch.nn.functional.binary_cross_entropy_with_logits(logits, y)))
    assert got["per_label"]["f1"] == pytest.approx(list(f1_score(yy, d, average=None)))
    assert got["per_label"]["support"] == yy.sum(0).tolist() and got["per_label"]["threshold"] == t
    # the thresholds matter: at 0.5 for every label the decisions (and F1) differ
    assert compute_metrics("multilabel", logits, y, 4)["f1_macro"] != pytest.approx(got["f1_macro"])
    assert default_metric("multilabel") == "average_precision" and direction("average_precision", "multilabel") == \
        "maximize" and direction("hamming_loss", "multilabel") == "minimize"
    with pytest.raises(ConfigError, match="unknown multilabel metric 'accuracy'.*subset_accuracy"):
        direction("accuracy", "multilabel")


def test_loss_auto_is_bce_with_logits_and_single_label_losses_refuse():
    logits, y = _case()
    section = validate_recipe({**ML, "loss": {"name": "auto"}}).loss
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    assert float(build_loss(section, "multilabel", 4)(logits, y)) == pytest.approx(float(want))
    weighted = validate_recipe({**ML, "loss": {"name": "bce", "pos_weight": [1.0, 2.0, 3.0, 4.0]}}).loss
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor([1., 2., 3., 4.]))
    assert float(build_loss(weighted, "multilabel", 4)(logits, y)) == pytest.approx(float(want))
    for bad, message in (({"name": "cross_entropy"}, "loss.name: cross_entropy needs a classification dataset"),
                         ({"name": "bce", "label_smoothing": 0.1}, "loss.label_smoothing"),
                         ({"name": "bce", "pos_weight": [1.0, 2.0]}, "loss.pos_weight: one positive number or 4")):
        with pytest.raises(ConfigError, match=message):
            build_loss(validate_recipe({**ML, "loss": bad}).loss, "multilabel", 4)


def test_mixup_mixes_the_label_vectors():
    recipe = validate_recipe({**ML, "augment": {"mixup": 0.4}, "train": {"epochs": 1}})
    result = train(recipe)  # a run with mixed 0/1 vectors as targets
    assert result.metrics["test"]["log_loss"] > 0
    from dnntune.data.augment import mix

    torch.manual_seed(0)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    _, mixed = mix(torch.zeros(3, 2), y, 2, 0.4, 0.0, 1.0)
    assert mixed.shape == y.shape and ((mixed >= 0) & (mixed <= 1)).all() and not torch.equal(mixed, y)


# --- thresholds: from the validation split only ----------------------------------------------------------------


def _disagreeing_data():
    """Three labels, each ``x_k > 0`` in training and test, but ``x_k > 1`` in validation: a model fit on training
    puts p = 0.5 near x_k = 0, so validation's best F1 threshold lies well above 0.5, training's near 0.5."""
    rng = np.random.default_rng(0)
    x, xt = rng.normal(size=(900, 3)).astype(np.float32), rng.normal(size=(200, 3)).astype(np.float32)
    raw = RawData(x, (x > 0).astype(np.float32), "multilabel", "tabular", x_test=xt,
                  y_test=(xt > 0).astype(np.float32), class_names=["a", "b", "c"])
    section = validate_recipe({"data": {"name": "iris", "val_fraction": 0.3, "normalize": False},
                               "model": {"family": "linear"}}).data
    data = prepare(raw, section, 0)
    return dataclasses.replace(data, val=Split(data.val.x, (data.val.x > 1).float()))


def test_thresholds_are_chosen_on_the_validation_split_only(tmp_path):
    data = _disagreeing_data()
    recipe = validate_recipe({"seed": 0, "data": {"name": "iris"}, "model": {"family": "linear"},
                              "optim": {"name": "adam", "lr": 0.1}, "train": {"epochs": 15, "batch_size": 64}})
    trainer = Trainer(recipe, data, out_dir=tmp_path)
    result = trainer.fit()
    with torch.no_grad():
        out = {s: trainer.model(getattr(data, s).x) for s in ("train", "val", "test")}
    chosen = trainer.thresholds
    assert chosen == choose_thresholds(out["val"], data.val.y)
    assert min(chosen) > 0.6  # validation's rule (x > 1), not training's
    assert max(choose_thresholds(out["train"], data.train.y)) < 0.6
    assert max(choose_thresholds(out["test"], data.test.y)) < 0.6
    assert trainer.thresholds_from == "validation split"
    # ... used by the final metrics, saved in the run folder and its summary
    assert result.metrics["test"]["per_label"]["threshold"] == chosen
    assert Preprocessing.load(tmp_path).thresholds == chosen
    assert json.loads((tmp_path / "summary.json").read_text())["thresholds"] == {"values": chosen,
                                                                                  "from": "validation split"}


def test_without_a_validation_split_thresholds_are_given_or_one_half():
    data = load_data(validate_recipe({**ML, "data": {**ML["data"], "val_fraction": 0.0}}).data, 0)
    recipe = validate_recipe({**ML, "data": {**ML["data"], "val_fraction": 0.0}, "train": {"epochs": 1}})
    plain = Trainer(recipe, data)
    plain.fit()
    assert plain.thresholds == [0.5] * 4 and plain.thresholds_from == "default 0.5 (no validation split)"
    given = Trainer(recipe, data, thresholds=([0.2, 0.3, 0.4, 0.6], "trial 3's validation split"))
    result = given.fit()
    assert given.thresholds == [0.2, 0.3, 0.4, 0.6] and result.metrics["test"]["per_label"]["threshold"] == \
        [0.2, 0.3, 0.4, 0.6]


def test_choose_thresholds_maximizes_each_labels_f1():
    logits, y = _case()
    t = choose_thresholds(logits, y)
    p = torch.sigmoid(logits).numpy()
    for k in range(4):
        best = max(f1_score(y[:, k], p[:, k] >= c, zero_division=0) for c in np.unique(p[:, k]))
        assert f1_score(y[:, k], p[:, k] >= np.float32(t[k]), zero_division=0) == pytest.approx(best)
    assert choose_thresholds(logits, torch.zeros_like(y)) == [0.5] * 4  # no positive: nothing to choose on


# --- predictions ---------------------------------------------------------------------------------------------------


def test_predictions_carry_probabilities_decisions_and_label_names():
    pre = Preprocessing("toy", "multilabel", "tabular", (2,), 3, class_names=["a", "b", "c"],
                        thresholds=[0.5, 0.9, 0.2])
    logits = torch.tensor([[0.0, 2.0, -1.0], [-3.0, 3.0, -2.0]])  # p = .5 .88 .27 / .05 .95 .12
    pred = pre.outputs_to_predictions(logits)
    assert pred.decisions.tolist() == [[1, 0, 1], [0, 1, 0]] and pred.labels == [["a", "c"], ["b"]]
    assert np.allclose(pred.probabilities, torch.sigmoid(logits).numpy())
    assert Preprocessing.from_files(pre.to_files()) == pre and Preprocessing.from_files(pre.to_files()).thresholds == \
        [0.5, 0.9, 0.2]
    columns, rows = prediction_rows(pred, ["r0", "r1"], pre.labels, proba=True)
    assert columns == ["id", "labels", "y_a", "y_b", "y_c", "p_a", "p_b", "p_c"]
    assert rows[0][:5] == ["r0", "a;c", 1, 0, 1] and rows[1][:5] == ["r1", "b", 0, 1, 0]
    body = prediction_json(_slice(pred, 1, 2), "m")
    assert body["labels"] == [["b"]] and body["decisions"] == [[0, 1, 0]] and len(body["probabilities"][0]) == 3
    files = pre.to_files()
    meta = json.loads(files["preprocess.json"])
    meta["thresholds"] = [0.5, 2.0, 0.1]
    files["preprocess.json"] = json.dumps(meta).encode()
    with pytest.raises(DataError, match="thresholds must be a list of 3 numbers in \\[0, 1\\]"):
        Preprocessing.from_files(files)


def test_load_run_predict_reproduces_the_test_metrics(tmp_path):
    recipe = validate_recipe(ML)
    train(recipe, out_dir=tmp_path)
    raw = load_data(recipe.data.model_copy(update={"normalize": False}), recipe.seed)
    run = load_run(tmp_path)
    assert run.task == "multilabel" and run.class_names == [f"label_{k}" for k in range(4)]
    pred = run.predict(raw.test.x.numpy())
    want = json.loads((tmp_path / "summary.json").read_text())["metrics"]["test"]
    got = compute_metrics("multilabel", torch.from_numpy(pred.outputs), raw.test.y, 4, confusion=True,
                          thresholds=run.preprocessing.thresholds)
    for key in ("f1_micro", "f1_macro", "subset_accuracy", "hamming_loss", "per_label"):
        assert got[key] == want[key], key
    for key in ("average_precision", "log_loss"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    # the decisions predict() returns are the ones the metrics counted
    assert f1_score(raw.test.y.numpy(), pred.decisions, average="micro") == pytest.approx(want["f1_micro"])


def test_onnx_export_keeps_parity_and_predictions(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from dnntune.deploy import export, load_onnx

    recipe = validate_recipe({**ML, "train": {"epochs": 1}})
    train(recipe, out_dir=tmp_path)
    result = export(tmp_path, "onnx")
    assert result.max_abs_diff <= result.tolerance
    x = load_data(recipe.data.model_copy(update={"normalize": False}), recipe.seed).test.x.numpy()
    onnx, torch_pred = load_onnx(result.path).predict(x), load_run(tmp_path).predict(x)
    assert onnx.labels == torch_pred.labels and np.array_equal(onnx.decisions, torch_pred.decisions)


# --- end to end -------------------------------------------------------------------------------------------------


def test_train_tune_and_report_on_a_multilabel_csv(tmp_path, capsys):
    raw = load_data(validate_recipe(ML).data.model_copy(update={"normalize": False, "test_fraction": 0.01}), 0)
    x, y = torch.cat([raw.train.x, raw.val.x]).numpy(), torch.cat([raw.train.y, raw.val.y]).numpy().astype(int)
    names = ["cat", "dog", "owl", "fox"]
    lines = ["f" + ",f".join(map(str, range(x.shape[1]))) + ",tags"]
    lines += [",".join(f"{v:g}" for v in row) + "," + "|".join(n for n, on in zip(names, lab) if on)
              for row, lab in zip(x, y)]
    path = _csv(tmp_path, "tags.csv", "\n".join(lines) + "\n")
    data = {"name": "csv", "path": str(path), "target": "tags", "task": "multilabel", "label_separator": "|"}
    recipe = write_recipe(tmp_path / "r.yaml", {**ML, "data": data})
    code, out, err = run(capsys, "train", str(recipe), "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "f1_micro" in out and "subset_accuracy" in out
    assert load_run(tmp_path / "run").class_names == sorted(names)
    code, out, err = run(capsys, "predict", str(tmp_path / "run"), str(path), "--proba")  # tags column ignored
    assert code == 0, err
    header, first = out.splitlines()[:2]
    assert header == "id,labels," + ",".join(f"y_{n}" for n in sorted(names)) + "," + ",".join(
        f"p_{n}" for n in sorted(names))
    want = load_run(tmp_path / "run").predict(x[:1])
    assert first.split(",")[1] == ";".join(want.labels[0])

    exp = {**ML, "data": data, "model": {"family": "mlp", "width": {"int": [8, 16]}, "depth": 1},
           "train": {"epochs": 1, "batch_size": 32}, "search": {"n_trials": 2, "pruner": "none"}}
    code, out, err = run(capsys, "tune", str(write_recipe(tmp_path / "exp.yaml", exp)), "--out", str(tmp_path / "tune"),
                         "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "tune" / "summary.json").read_text())
    assert list(summary["objectives"]) == ["average_precision"] and "f1_micro" in summary["test"]
    best = json.loads((tmp_path / "tune" / "best" / "summary.json").read_text())
    trial_dir = tmp_path / "tune" / "trials" / f"{summary['best']['trial']:04d}"
    # the retrain on train+val has no validation split: it keeps the best trial's validation thresholds
    assert best["thresholds"]["values"] == Preprocessing.load(trial_dir).thresholds
    assert best["thresholds"]["from"] == f"trial {summary['best']['trial']}'s validation split"
    assert Preprocessing.load(tmp_path / "tune" / "best").thresholds == best["thresholds"]["values"]
    html = (tmp_path / "tune" / "report" / "index.html").read_text()
    assert "Per label on the test split" in html and "<td>owl</td>" in html and "confusion" not in html.split(
        "Final test metrics")[1].split("Per label")[0]


def test_default_experiment_for_multilabel_uses_bce(tmp_path, capsys):
    from dnntune.search.defaults import complete_experiment

    exp = complete_experiment({"data": {"name": "multilabel"}})
    assert exp["loss"] == {"name": "bce"} and "mixup" not in exp["augment"]


def test_serve_answers_with_label_names_decisions_and_probabilities(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    import http.client
    import socket
    import subprocess
    import sys
    import time

    train(validate_recipe({**ML, "train": {"epochs": 1}}), out_dir=tmp_path / "run")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "dnntune", "serve", str(tmp_path / "run"), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)

    def request(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            try:
                if request("GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        x = np.random.default_rng(0).poisson(2.0, size=(3, 20)).astype(float).tolist()
        status, body = request("POST", "/predict", {"inputs": x})
        want = load_run(tmp_path / "run").predict(x)
        assert status == 200, body
        assert body["labels"] == want.labels and body["decisions"] == want.decisions.tolist()
        assert np.allclose(body["probabilities"], want.probabilities)
        assert request("GET", "/metadata")[1]["task"] == "multilabel"
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


def test_final_best_trial_keeps_the_trials_weights_and_validation_thresholds(tmp_path, capsys):
    exp = {**ML, "model": {"family": "mlp", "width": {"int": [8, 16]}, "depth": 1}, "train": {"epochs": 1},
           "search": {"n_trials": 2, "pruner": "none", "final": "best_trial"}}
    code, _, err = run(capsys, "tune", str(write_recipe(tmp_path / "exp.yaml", exp)), "--out", str(tmp_path / "t"),
                       "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    trial = Preprocessing.load(tmp_path / "t" / "trials" / f"{summary['best']['trial']:04d}")
    best = json.loads((tmp_path / "t" / "best" / "summary.json").read_text())
    assert best["thresholds"] == {"values": trial.thresholds, "from": "validation split"}
    assert summary["test"]["per_label"]["threshold"] == trial.thresholds
