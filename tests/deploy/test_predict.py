"""``dnntune predict``: new inputs from the files dnntune trains from, predicted as the run's own test split was.

Each run here is trained once (module fixture) on a tiny recipe; predicting its raw test inputs, written to
the file format a user would bring, must reproduce the test metrics in its summary.json exactly.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits, load_wine

import dnntune.deploy
from dnntune import load_run
from dnntune.cli import main
from dnntune.config import validate_recipe
from dnntune.data import load_data
from dnntune.data.preprocess import JSON_NAME, Preprocessing
from dnntune.deploy import read_inputs
from dnntune.engine import train
from dnntune.engine.metrics import compute_metrics
from dnntune.errors import DataError

CULTIVARS = ["barolo", "grignolino", "barbera"]  # load_wine's classes 0, 1, 2; sorted: barbera, barolo, grignolino


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _write_idx(path, a: np.ndarray):
    code = {np.uint8: 0x08}[a.dtype.type]
    path.write_bytes(bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())


def _digit_images(per_class: int, classes=(0, 1, 2)):
    d = load_digits()
    out = []
    for c in classes:
        out += [(c, img) for img in d.images[d.target == c][:per_class]]
    return out


def _wine_run(root):
    w = load_wine()
    path = _write_csv(root / "wine.csv", [*w.feature_names, "cultivar"],
                      [[*map(repr, row.tolist()), CULTIVARS[t]] for row, t in zip(w.data, w.target)])
    return {"data": {"name": "csv", "path": str(path), "target": "cultivar"},
            "model": {"family": "mlp", "width": 16, "depth": 1}, "optim": {"name": "adam", "lr": 0.01},
            "train": {"epochs": 12, "batch_size": 32}}


def _image_folder_run(root):
    """RGB 16×16 PNGs of three digit classes in train/ and test/; trained grey at 8×8 (resize and grey)."""
    images = _digit_images(55)
    for split, (start, stop) in {"train": (0, 40), "test": (40, 55)}.items():
        for c in (0, 1, 2):
            folder = root / "digits" / split / f"d{c}"
            folder.mkdir(parents=True)
            for k, img in enumerate([i for cc, i in images if cc == c][start:stop]):
                v = np.kron(img, np.ones((2, 2))) * 15
                rgb = np.stack([v, v / 2, 255 - v], axis=-1).astype(np.uint8)
                Image.fromarray(rgb).save(folder / f"{k:03d}.png")
    return {"data": {"name": "image_folder", "path": str(root / "digits"), "size": 8, "grayscale": True},
            "model": {"family": "cnn2d", "channels": 8, "depth": 2}, "optim": {"name": "adam", "lr": 0.01},
            "train": {"epochs": 3, "batch_size": 32}}


def _idx_run(root):
    d = load_digits()
    pixels = (d.images * 15).astype(np.uint8)
    folder = root / "idx"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte", pixels[:300])
    _write_idx(folder / "train-labels-idx1-ubyte", d.target[:300].astype(np.uint8))
    _write_idx(folder / "t10k-images-idx3-ubyte", pixels[300:400])
    _write_idx(folder / "t10k-labels-idx1-ubyte", d.target[300:400].astype(np.uint8))
    return {"data": {"name": "idx", "path": str(folder)}, "model": {"family": "cnn2d", "channels": 8, "depth": 2},
            "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 2, "batch_size": 64}}


def _npz_run(root):
    """8-bit digit images under the names ``images`` / ``labels``, with the file's own test split."""
    d = load_digits()
    pixels = (d.images * 15).astype(np.uint8)[:, None]
    np.savez(root / "digits.npz", images=pixels[:300], labels=d.target[:300], images_test=pixels[300:400],
             labels_test=d.target[300:400])
    return {"data": {"name": "npz", "path": str(root / "digits.npz"), "x_key": "images", "y_key": "labels"},
            "model": {"family": "cnn2d", "channels": 8, "depth": 2}, "train": {"epochs": 1}}


RUNS = {
    "wine_csv": _wine_run,
    "image_folder": _image_folder_run,
    "idx": _idx_run,
    "npz": _npz_run,
    "mnist1d": lambda root: {"data": {"name": "mnist1d", "num_samples": 200},
                             "model": {"family": "cnn1d", "channels": 8, "depth": 2}, "train": {"epochs": 2}},
    "diabetes": lambda root: {"data": {"name": "diabetes"}, "model": {"family": "mlp", "width": 16},
                              "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 5}},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name → (recipe, run folder, raw test split (inputs before normalization), data folder); read-only."""
    out = {}
    for name, make in RUNS.items():
        root = tmp_path_factory.mktemp(name)
        recipe = validate_recipe(make(root))
        train(recipe, out_dir=root / "run")
        raw_test = load_data(recipe.data.model_copy(update={"normalize": False}), recipe.seed).test
        out[name] = (recipe, root / "run", raw_test, root)
    return out


def _assert_reproduces_test_metrics(folder, outputs: np.ndarray, targets: torch.Tensor):
    run = load_run(folder)
    want = json.loads((folder / "summary.json").read_text())["metrics"]["test"]
    got = compute_metrics(run.task, torch.from_numpy(outputs), targets, run.preprocessing.num_outputs,
                          confusion=True)
    assert set(got) <= set(want)
    for key, value in got.items():
        if key in ("accuracy", "confusion_matrix"):
            assert value == want[key], key
        else:
            assert value == pytest.approx(want[key], rel=1e-6), key


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --- feature names -------------------------------------------------------------------------------


def test_a_csv_run_records_its_feature_columns_and_older_folders_without_them_still_load(runs, tmp_path):
    _, folder, _, _ = runs["wine_csv"]
    pre = Preprocessing.load(folder)
    assert pre.feature_names == list(load_wine().feature_names)
    assert Preprocessing.from_files(pre.to_files()) == pre
    renamed = Preprocessing(**{**pre.__dict__, "feature_names": ["x"] * 13})
    assert renamed != pre  # the names are part of what a run folder describes
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    meta = json.loads((old / JSON_NAME).read_text())
    del meta["feature_names"]
    (old / JSON_NAME).write_text(json.dumps(meta))
    assert Preprocessing.load(old).feature_names is None
    assert load_run(old).predict(runs["wine_csv"][2].x[:2]).labels is not None
    assert Preprocessing.load(runs["diabetes"][1]).feature_names is None  # builtin data: no column names


# --- each kind of run reproduces its test metrics from the user's files -------------------------


@pytest.mark.parametrize("keep_target", [True, False], ids=["target-kept", "target-dropped"])
def test_csv_with_shuffled_columns_reproduces_the_test_metrics(runs, tmp_path, keep_target):
    recipe, folder, raw_test, _ = runs["wine_csv"]
    names = list(load_wine().feature_names)
    run = load_run(folder)
    truth = [run.class_names[i] for i in raw_test.y.tolist()]
    columns = {n: [repr(float(v)) for v in raw_test.x[:, j].tolist()] for j, n in enumerate(names)}
    columns["batch"] = ["lot-7"] * len(raw_test)  # extra columns, even non-numeric, are ignored
    if keep_target:
        columns["cultivar"] = truth
    order = list(np.random.default_rng(1).permutation(list(columns)))
    assert order[:13] != names
    path = _write_csv(tmp_path / "new.csv", order, list(zip(*(columns[c] for c in order))))

    inputs = read_inputs(path, run.preprocessing, run.recipe)
    assert torch.equal(torch.from_numpy(inputs.x), raw_test.x)  # bit-identical to training's test inputs
    assert inputs.ids == [str(i) for i in range(len(raw_test))]
    pred = run.predict(inputs.x)
    assert set(pred.labels) <= {"barbera", "barolo", "grignolino"}
    _assert_reproduces_test_metrics(folder, pred.outputs, raw_test.y)
    assert np.mean([p == t for p, t in zip(pred.labels, truth)]) > 0.8  # the names belong to the right classes


def test_image_folder_and_single_image_files_reproduce_the_test_metrics(runs):
    recipe, folder, raw_test, root = runs["image_folder"]
    run = load_run(folder)
    inputs = read_inputs(root / "digits" / "test", run.preprocessing, run.recipe)
    assert inputs.ids[:2] == ["d0/000.png", "d0/001.png"] and len(inputs) == 45
    assert torch.equal(torch.from_numpy(inputs.x), raw_test.x)  # the loader's own resize and grey conversion
    pred = run.predict(inputs.x)
    _assert_reproduces_test_metrics(folder, pred.outputs, raw_test.y)
    assert set(pred.labels) <= {"d0", "d1", "d2"}

    files = [root / "digits" / "test" / "d2" / "003.png", root / "digits" / "test" / "d0" / "000.png"]
    single = read_inputs(files, run.preprocessing, run.recipe)
    assert single.ids == ["003.png", "000.png"]
    assert np.array_equal(single.x, inputs.x[[inputs.ids.index("d2/003.png"), 0]])
    one = read_inputs(files[0], run.preprocessing)  # without the recipe: size and grey from the input shape
    assert np.array_equal(one.x, single.x[:1])


def test_an_idx_images_file_reproduces_the_test_metrics(runs):
    recipe, folder, raw_test, root = runs["idx"]
    run = load_run(folder)
    inputs = read_inputs(root / "idx" / "t10k-images-idx3-ubyte", run.preprocessing, run.recipe)
    assert torch.equal(torch.from_numpy(inputs.x), raw_test.x)  # pixels / 255 as the idx loader
    _assert_reproduces_test_metrics(folder, run.predict(inputs.x).outputs, raw_test.y)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: holds labels, not images"):
        read_inputs(root / "idx" / "t10k-labels-idx1-ubyte", run.preprocessing)


def test_mnist1d_signals_from_npy_and_npz_reproduce_the_test_metrics(runs, tmp_path):
    recipe, folder, raw_test, _ = runs["mnist1d"]
    run = load_run(folder)
    x = raw_test.x.numpy()
    np.save(tmp_path / "signals.npy", x)
    np.savez(tmp_path / "signals.npz", signals=x[:, 0, :], other=np.zeros(3))  # (N, 40): channel axis added
    from_npy = read_inputs(tmp_path / "signals.npy", run.preprocessing, run.recipe)
    from_npz = read_inputs(tmp_path / "signals.npz", run.preprocessing, run.recipe, key="signals")
    assert np.array_equal(from_npy.x, x) and np.array_equal(from_npz.x, x)
    _assert_reproduces_test_metrics(folder, run.predict(from_npy.x).outputs, raw_test.y)
    with pytest.raises(DataError, match=r"signals.npz: no array 'x' and 2 arrays \(signals, other\).*--key"):
        read_inputs(tmp_path / "signals.npz", run.preprocessing, run.recipe)


def test_8_bit_images_in_an_npz_are_scaled_with_the_npz_loaders_own_arithmetic(runs, tmp_path):
    recipe, folder, raw_test, root = runs["npz"]
    run = load_run(folder)
    with np.load(root / "digits.npz") as z:
        np.savez(tmp_path / "new.npz", images=z["images_test"], labels=z["labels_test"])
    inputs = read_inputs(tmp_path / "new.npz", run.preprocessing, run.recipe)  # the recipe's x_key by default
    assert inputs.source.endswith("new.npz (array 'images')")
    assert torch.equal(torch.from_numpy(inputs.x), raw_test.x)  # x * float32(1/255), not x / 255
    _assert_reproduces_test_metrics(folder, run.predict(inputs.x).outputs, raw_test.y)


def test_regression_predictions_come_back_in_target_units(runs, tmp_path, capsys):
    recipe, folder, raw_test, _ = runs["diabetes"]
    run = load_run(folder)
    np.save(tmp_path / "x.npy", raw_test.x.numpy())
    pred = run.predict(read_inputs(tmp_path / "x.npy", run.preprocessing).x)
    y = raw_test.y.numpy()  # disease progression, about 25..346: never standardized here
    assert pred.values.shape == y.shape
    assert abs(pred.values.mean() - y.mean()) < y.std()
    want = json.loads((folder / "summary.json").read_text())["metrics"]["test"]
    assert float(np.mean((pred.values.astype(np.float64) - y) ** 2)) == pytest.approx(want["mse"], rel=1e-5)

    # a CSV for a run without column names: its features in the training order, with or without a header row
    rows = [[repr(float(v)) for v in r] for r in raw_test.x.tolist()]
    no_header = tmp_path / "no_header.csv"
    no_header.write_text("\n".join(",".join(r) for r in rows) + "\n")
    assert np.array_equal(read_inputs(no_header, run.preprocessing).x, raw_test.x.numpy())

    code, out, _ = _cli(capsys, "predict", folder, tmp_path / "x.npy", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["id"] for r in rows[:2]] == ["0", "1"] and set(rows[0]) == {"id", "value"}
    assert np.allclose([r["value"] for r in rows], pred.values, rtol=1e-6)


# --- the command line ----------------------------------------------------------------------------


def test_cli_predict_writes_labels_and_probabilities_as_csv_and_json(runs, tmp_path, capsys):
    _, folder, raw_test, root = runs["wine_csv"]
    run = load_run(folder)
    names = list(load_wine().feature_names)
    truth = [run.class_names[i] for i in raw_test.y.tolist()]
    path = _write_csv(tmp_path / "new.csv", names[::-1],
                      [[repr(float(v)) for v in row[::-1]] for row in raw_test.x.tolist()])
    want = json.loads((folder / "summary.json").read_text())["metrics"]["test"]

    code, out, _ = _cli(capsys, "predict", folder, path, "--out", tmp_path / "preds.csv", "--proba")
    assert code == 0 and "preds.csv" in out
    with open(tmp_path / "preds.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["id", "label", "p_barbera", "p_barolo", "p_grignolino"]
    assert len(table) == len(raw_test) and [r["id"] for r in table] == [str(i) for i in range(len(raw_test))]
    assert np.mean([r["label"] for r in table] == np.array(truth)) == want["accuracy"]
    proba = np.array([[float(r[f"p_{c}"]) for c in run.class_names] for r in table])
    assert np.allclose(proba.sum(1), 1, atol=1e-5)
    assert [run.class_names[i] for i in proba.argmax(1)] == [r["label"] for r in table]
    assert np.allclose(proba, run.predict(raw_test.x).probabilities, atol=1e-7)

    code, out, _ = _cli(capsys, "predict", folder, path, "--json")
    assert code == 0
    rows = json.loads(out)
    assert rows[0].keys() == {"id", "label"} and [r["label"] for r in rows] == [r["label"] for r in table]

    code, out, _ = _cli(capsys, "predict", folder, path, "--batch-size", "7")  # CSV on stdout
    assert code == 0 and out.splitlines()[0] == "id,label"
    assert [line.split(",")[1] for line in out.splitlines()[1:]] == [r["label"] for r in table]


def _no_model(runs, tmp_path):
    target = tmp_path / "no_model"
    shutil.copytree(runs["wine_csv"][1], target)
    (target / "model.safetensors").unlink()
    return target


BAD = {  # name → (run, make the input (tmp_path, data folder) → path, what the message must say)
    "missing run folder": (None, lambda t, r: r / "wine.csv", r"nope: no such run folder"),
    "wrong input format": ("wine_csv", lambda t, r: _touch(t / "new.json", "{}"),
                           r"new.json: not a format dnntune predicts from \(suffix '.json'\); pass a CSV file"),
    "corrupt npz": ("wine_csv", lambda t, r: _touch(t / "new.npz", "x,y\n1,2\n"), r"new.npz: not a readable .npz"),
    "feature columns that don't match": (
        "wine_csv", lambda t, r: _write_csv(t / "new.csv", ["alcohol", "ash", "cultivar"], [["1", "2", "barolo"]]),
        r"new.csv: missing feature column\(s\) 'malic_acid', 'alcalinity_of_ash'.*'proline'; the run was trained on"),
    "non-numeric feature": (
        "wine_csv", lambda t, r: _wine_rows(t, {"hue": "high"}),
        r"new.csv: column 'hue' has a non-numeric value 'high' at line 2"),
    "wrong shape": ("wine_csv", lambda t, r: _npy(t / "new.npy", np.zeros((3, 12))),
                    r"new.npy: samples of shape \(12,\) \(array \(3, 12\)\); the run expects \(N, 13\)"),
    "wrong image shape": ("mnist1d", lambda t, r: _npy(t / "new.npy", np.zeros((3, 1, 41))),
                          r"new.npy: samples of shape \(1, 41\).*the run expects \(N, 1, 40\) \(mnist1d: signal"),
    "NaN in the inputs": ("mnist1d", lambda t, r: _npy(t / "new.npy", np.full((2, 1, 40), np.nan)),
                          r"new.npy: the input data contains 80 NaN/inf value\(s\)"),
    "CSV for an image run": ("image_folder", lambda t, r: r / "run" / "curves.csv",
                             r"curves.csv: a CSV file holds tabular rows, but the run expects \(N, 1, 8, 8\)"),
    "images for a signal run": ("mnist1d", lambda t, r: _png(t / "new.png"),
                                r"new.png: image files are read as the image_folder loader reads them"),
    "folder without images": ("image_folder", lambda t, r: t, r"no image files \(.bmp, .*\) in the folder"),
}


def _touch(path, text):
    path.write_text(text)
    return path


def _npy(path, a):
    np.save(path, a)
    return path


def _png(path):
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)
    return path


def _wine_rows(tmp_path, replace: dict):
    names = list(load_wine().feature_names)
    row = [replace.get(n, "1.0") for n in names]
    return _write_csv(tmp_path / "new.csv", names, [row])


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_naming_the_file_or_column(runs, tmp_path, capsys, case):
    run_name, make_input, message = BAD[case]
    folder = runs[run_name][1] if run_name else tmp_path / "nope"
    data_root = runs[run_name or "wine_csv"][3]
    code, out, err = _cli(capsys, "predict", folder, make_input(tmp_path, data_root))
    assert code == 2, err
    assert err.startswith("dnntune: error: ") and "Traceback" not in err and out == ""
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_a_run_folder_without_a_model_exits_2_naming_the_weights_file(runs, tmp_path, capsys):
    no_model = _no_model(runs, tmp_path)
    code, _, err = _cli(capsys, "predict", no_model, runs["wine_csv"][3] / "wine.csv")
    assert code == 2 and f"{no_model / 'model.safetensors'}: missing" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _cli(capsys, "predict", empty, runs["wine_csv"][3] / "wine.csv")
    assert code == 2 and f"{empty}: not a dnntune run folder (no model.safetensors)" in err


# --- ONNX and export (the exporter is another module of issue 9) --------------------------------

needs_onnx = pytest.mark.skipif(not hasattr(dnntune.deploy, "load_onnx"), reason="dnntune.deploy.load_onnx not "
                                "available yet (ONNX export)")
needs_export = pytest.mark.skipif(not hasattr(dnntune.deploy, "export"), reason="dnntune.deploy.export not "
                                  "available yet")


@needs_onnx
def test_predict_with_onnxruntime_gives_the_labels_of_pytorch(runs, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    _, folder, _, root = runs["wine_csv"]
    run_copy = tmp_path / "run"
    shutil.copytree(folder, run_copy)
    result = dnntune.deploy.export(run_copy, format="onnx")
    code, out, _ = _cli(capsys, "predict", run_copy, root / "wine.csv", "--proba", "--json")
    assert code == 0
    by_torch = json.loads(out)
    for target in (run_copy, result.path):  # the run folder holding model.onnx, or the .onnx file itself
        code, out, err = _cli(capsys, "predict", target, root / "wine.csv", "--engine", "onnxruntime", "--proba",
                              "--json")
        assert code == 0, err
        by_onnx = json.loads(out)
        assert [r["label"] for r in by_onnx] == [r["label"] for r in by_torch]
        assert np.allclose([[v for k, v in r.items() if k.startswith("p_")] for r in by_onnx],
                           [[v for k, v in r.items() if k.startswith("p_")] for r in by_torch], atol=1e-5)


@needs_export
def test_cli_export_prints_the_path_and_the_parity_check(runs, tmp_path, capsys):
    _, folder, _, _ = runs["wine_csv"]
    run_copy = tmp_path / "run"
    shutil.copytree(folder, run_copy)
    code, out, err = _cli(capsys, "export", run_copy, "--format", "torch-export", "--out", tmp_path / "m.pt2",
                          "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["path"] == str(tmp_path / "m.pt2") and (tmp_path / "m.pt2").is_file()
    assert info["format"] == "torch-export" and info["max_abs_diff"] <= 1e-4 and info["checked_samples"] > 0
    code, out, _ = _cli(capsys, "export", run_copy, "--format", "torch-export")
    assert code == 0 and "max abs diff" in out
