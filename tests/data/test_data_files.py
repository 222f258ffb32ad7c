"""The file loaders (csv, npz, idx, image_folder) through the public path: recipe → load_data → Data."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from dnntune.cli import main
from dnntune.config import validate_recipe
from dnntune.data import load_data
from dnntune.data.files import auto_task
from dnntune.data.image_files import read_idx
from dnntune.errors import ConfigError, DataError, UserError

MODEL = {"family": "mlp", "width": 16, "depth": 1}


def recipe_raw(data: dict, **sections) -> dict:
    raw = {"seed": 0, "data": data, "model": MODEL, "optim": {"name": "adam", "lr": 0.01},
           "train": {"epochs": 2, "batch_size": 32}}
    raw.update(sections)
    return raw


def load(data: dict):
    recipe = validate_recipe(recipe_raw(data))
    return load_data(recipe.data, recipe.seed)


def sizes(d) -> tuple[int, int, int]:
    return len(d.train), len(d.val), len(d.test)


def cli_train(tmp_path: Path, capsys, data: dict, **sections):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_raw(data, **sections)))
    code = main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    _, err = capsys.readouterr()
    return code, err


# --- csv ------------------------------------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    lines = [delimiter.join(header)] + [delimiter.join(str(c) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def labelled_csv(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    names = ["dog", "cat", "bird"]
    rows = [[f"{rng.normal():.4f}", f"{rng.normal():.4f}", names[i % 3]] for i in range(60)]
    return write_csv(tmp_path / "pets.csv", ["a", "b", "label"], rows)


def test_csv_string_labels_become_sorted_classes(labelled_csv):
    d = load({"name": "csv", "path": str(labelled_csv), "target": "label"})
    assert d.task == "classification" and d.kind == "tabular"
    assert d.num_outputs == 3 and d.class_names == ["bird", "cat", "dog"]
    assert d.input_shape == (2,)
    assert sum(sizes(d)) == 60 and len(d.test) == 12
    assert d.train.y.dtype.is_floating_point is False


def test_csv_numeric_targets_pick_the_task(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    cols = ["f1", "f2", "f3", "y"]
    ints = write_csv(tmp_path / "ints.csv", cols, [[*r, i % 4] for i, r in enumerate(x)])
    floats = write_csv(tmp_path / "floats.csv", cols, [[*r, r.sum()] for r in x])
    many = write_csv(tmp_path / "many.csv", cols, [[*r, i] for i, r in enumerate(x)])
    d = load({"name": "csv", "path": str(ints), "target": "y"})
    assert d.task == "classification" and d.num_outputs == 4 and d.class_names == ["0", "1", "2", "3"]
    d = load({"name": "csv", "path": str(floats), "target": "y"})
    assert d.task == "regression" and d.num_outputs == 1 and d.class_names is None
    d = load({"name": "csv", "path": str(many), "target": "y"})
    assert d.task == "regression"
    d = load({"name": "csv", "path": str(ints), "target": "y", "task": "regression"})
    assert d.task == "regression"


def test_csv_features_delimiter_and_quoting(tmp_path):
    rows = [[i, i * 2, f'"note, {i}"', i % 2] for i in range(30)]
    path = write_csv(tmp_path / "semi.csv", ["x1", "x2", "note", "cls"], rows, delimiter=";")
    d = load({"name": "csv", "path": str(path), "target": "cls", "delimiter": ";", "features": ["x2", "x1"]})
    assert d.input_shape == (2,) and d.task == "classification" and d.num_outputs == 2


@pytest.mark.parametrize("n_unique, n_rows, task", [
    (2, 30, "classification"), (10, 20, "classification"), (11, 100, "regression"),
    (50, 1000, "classification"), (51, 5000, "regression"), (40, 400, "regression"),
])
def test_auto_task_rule(n_unique, n_rows, task):
    y = np.arange(n_rows) % n_unique
    assert auto_task(y) == task
    assert auto_task(y + 0.5) == "regression"
    assert auto_task(np.array(["a", "b"] * 5)) == "classification"


@pytest.mark.parametrize("rows, knobs, message", [
    ([[1, 2, 0]] * 5, {"target": "label"}, "no target column 'label'; columns: a, b, y"),
    # text columns are categories and empty / NaN cells are imputed (tests/data/test_tabular.py); infinite
    # numbers and categorical columns that are not features are still errors
    ([[1, 2, 0], ["inf", 2, 1], ["", 4, 0]], {"target": "y"}, "column 'a' has the non-finite value 'inf' at line 3"),
    ([[1, 2, 0]] * 5, {"target": "y", "categorical": ["y"]}, "categorical lists 'y', not feature column(s)"),
    ([[1, 2, 0], [1, 2, ""], [5, 4, 0]], {"target": "y"}, "target column 'y' has a missing value '' at line 3"),
    ([[1, 2, "x"]] * 5, {"target": "y", "task": "regression"}, "task regression needs numeric targets, found 'x'"),
    ([[1, 2, 0.5], [1, 2, 1.5], [1, 2, 1]], {"target": "y", "task": "classification"}, "fractional"),
    ([[1, 2, 0]] * 5, {"target": "y", "features": ["a", "zz"]}, "no feature column(s) 'zz'"),
    ([[1, 2, 0], [1, 2]], {"target": "y"}, "line 3 has 2 fields, the header has 3"),
])
def test_csv_errors_name_the_file_column_and_line(tmp_path, rows, knobs, message):
    path = write_csv(tmp_path / "bad.csv", ["a", "b", "y"], rows)
    with pytest.raises(DataError) as e:
        load({"name": "csv", "path": str(path), **knobs})
    assert str(path) in str(e.value) and message in str(e.value)


def test_csv_missing_empty_and_headless_files(tmp_path):
    with pytest.raises(DataError, match="nope.csv: no such file"):
        load({"name": "csv", "path": str(tmp_path / "nope.csv"), "target": "y"})
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(DataError, match="empty.csv: empty file"):
        load({"name": "csv", "path": str(tmp_path / "empty.csv"), "target": "y"})
    (tmp_path / "head.csv").write_text("a,y\n")
    with pytest.raises(DataError, match="head.csv: has a header but no data rows"):
        load({"name": "csv", "path": str(tmp_path / "head.csv"), "target": "y"})
    path = write_csv(tmp_path / "semi.csv", ["a", "y"], [[1, 0]] * 5, delimiter=";")
    with pytest.raises(DataError, match="only one column was found: is the delimiter ',' right"):
        load({"name": "csv", "path": str(path), "target": "y"})


def test_csv_required_knobs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="target"):
        validate_recipe(recipe_raw({"name": "csv", "path": "x.csv"}))
    with pytest.raises(ConfigError, match="task"):
        validate_recipe(recipe_raw({"name": "csv", "path": "x.csv", "target": "y", "task": "ranking"}))


# --- npz ------------------------------------------------------------------------------------------


def test_npz_own_test_split_is_kept(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.normal(size=(50, 4)), y=np.arange(50) % 3,
             x_test=rng.normal(size=(15, 4)), y_test=np.arange(15) % 3)
    d = load({"name": "npz", "path": str(path)})
    assert d.kind == "tabular" and d.task == "classification" and d.num_outputs == 3
    assert len(d.test) == 15 and len(d.train) + len(d.val) == 50
    assert d.input_shape == (4,)


@pytest.mark.parametrize("shape, kind", [((40, 2, 16), "signal"), ((40, 1, 6, 5), "image"), ((40,), "tabular")])
def test_npz_kind_follows_the_rank_of_x(tmp_path, shape, kind):
    path = tmp_path / "d.npz"
    np.savez(path, inputs=np.random.default_rng(0).integers(0, 256, size=shape).astype(np.uint8),
             targets=np.linspace(0, 1, 40))
    d = load({"name": "npz", "path": str(path), "x_key": "inputs", "y_key": "targets", "normalize": False})
    assert d.kind == kind and d.task == "regression" and d.num_outputs == 1
    assert d.input_shape == (shape[1:] or (1,))
    if kind == "image":  # 8-bit images scaled to [0, 1] (uniform pixels: spanning it)
        assert float(d.train.x.min()) >= 0.0 and 0.95 < float(d.train.x.max()) <= 1.0


def test_npz_string_labels_multi_output_and_one_hot(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 3))
    np.savez(tmp_path / "s.npz", x=x, y=np.array(["no", "yes", "maybe"] * 10))
    d = load({"name": "npz", "path": str(tmp_path / "s.npz")})
    assert d.class_names == ["maybe", "no", "yes"] and d.num_outputs == 3
    np.savez(tmp_path / "m.npz", x=x, y=x[:, :2] * 2)
    d = load({"name": "npz", "path": str(tmp_path / "m.npz")})
    assert d.task == "regression" and d.num_outputs == 2
    np.savez(tmp_path / "h.npz", x=x, y=np.eye(3)[np.arange(30) % 3])
    d = load({"name": "npz", "path": str(tmp_path / "h.npz"), "task": "classification"})
    assert d.task == "classification" and d.num_outputs == 3


def test_npz_errors(tmp_path):
    x = np.zeros((10, 2))
    cases = {
        "keys.npz": ({"inputs": x, "y": np.zeros(10)}, "no array(s) 'x'; arrays in the file: inputs, y"),
        "len.npz": ({"x": x, "y": np.zeros(9)}, "'x' has 10 samples but 'y' has 9"),
        "nan.npz": ({"x": np.where(np.eye(10, 2) > 0, np.nan, 0.0), "y": np.zeros(10)},
                    "array 'x' contains 2 NaN/inf value(s); first NaN at index (0, 0)"),
        "inf.npz": ({"x": x, "y": np.r_[np.zeros(9), np.inf]}, "array 'y' contains 1 NaN/inf value(s)"),
        "testinf.npz": ({"x": x, "y": np.linspace(0, 1, 10), "x_test": x, "y_test": np.r_[np.zeros(9), -np.inf]},
                        "array 'y_test' contains 1 NaN/inf"),
        "testshape.npz": ({"x": x, "y": np.zeros(10), "x_test": np.zeros((4, 3)), "y_test": np.zeros(4)},
                          "'x_test' samples have shape (3,) but 'x' samples have (2,)"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(DataError) as e:
            load({"name": "npz", "path": str(tmp_path / name)})
        assert str(tmp_path / name) in str(e.value) and message in str(e.value), name
    with pytest.raises(DataError, match="missing.npz: no such file"):
        load({"name": "npz", "path": str(tmp_path / "missing.npz")})
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="text.npz: "):
        load({"name": "npz", "path": str(tmp_path / "text.npz")})
    np.save(tmp_path / "single.npy", x)
    with pytest.raises(DataError, match="single array"):
        load({"name": "npz", "path": str(tmp_path / "single.npy")})


# --- idx ------------------------------------------------------------------------------------------


def idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, shape=(6, 5)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 4).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 4).astype(np.uint8),
    }
    for name, a in parts.items():
        train = name.startswith("train")
        if gz and train:  # train gzipped, test plain: both are read
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(idx_bytes(a))
        else:
            (folder / name).write_bytes(idx_bytes(a))
    return folder


def test_idx_reads_gzipped_and_plain_files_with_own_test_split(tmp_path):
    folder = write_idx(tmp_path / "mnist")
    d = load({"name": "idx", "path": str(folder), "normalize": False})
    assert d.kind == "image" and d.task == "classification"
    assert d.input_shape == (1, 6, 5) and d.num_outputs == 4 and d.class_names == ["0", "1", "2", "3"]
    assert len(d.test) == 20 and len(d.train) + len(d.val) == 60
    assert 0.0 <= float(d.train.x.min()) < 0.05 and 0.95 < float(d.train.x.max()) <= 1.0  # 0..255 scaled
    d = load({"name": "idx", "path": str(folder), "limit": 30})
    assert len(d.train) + len(d.val) == 30 and len(d.test) == 20


def test_read_idx_header_dtypes(tmp_path):
    a = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    (tmp_path / "ints").write_bytes(idx_bytes(a, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "ints"), a)
    f = np.linspace(0, 1, 6, dtype=">f8")
    (tmp_path / "floats").write_bytes(idx_bytes(f, 0x0E))
    np.testing.assert_array_equal(read_idx(tmp_path / "floats"), f)


def test_idx_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load({"name": "idx", "path": str(tmp_path / "nowhere")})
    folder = write_idx(tmp_path / "a", gz=False)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load({"name": "idx", "path": str(folder)})

    folder = write_idx(tmp_path / "b", gz=False)
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(DataError, match="train-images-idx3-ubyte: not an IDX file \\(bad magic number 12345678"):
        load({"name": "idx", "path": str(folder)})

    folder = write_idx(tmp_path / "c", gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(59, dtype=np.uint8)))
    with pytest.raises(DataError, match="has 60 images but .*train-labels-idx1-ubyte has 59 labels"):
        load({"name": "idx", "path": str(folder)})

    folder = write_idx(tmp_path / "d", gz=False)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: header says shape \\(20, 6, 5\\)"):
        load({"name": "idx", "path": str(folder)})


# --- image_folder ---------------------------------------------------------------------------------


def write_images(root: Path, classes=("cat", "dog"), n: int = 6, ext: str = "png") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(7 + i, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.{ext}")
    return root


def test_image_folder_classes_sizes_and_channels(tmp_path):
    root = write_images(tmp_path / "pics")
    write_images(root, classes=("cat",), n=2, ext="jpg")
    write_images(root, classes=("dog",), n=2, ext="bmp")
    (root / "dog" / "notes.txt").write_text("not an image")
    d = load({"name": "image_folder", "path": str(root), "size": 8, "normalize": False})
    assert d.kind == "image" and d.task == "classification" and d.class_names == ["cat", "dog"]
    assert d.input_shape == (3, 8, 8) and sum(sizes(d)) == 16
    assert 0.0 <= float(d.train.x.min()) < 0.3 and 0.7 < float(d.train.x.max()) <= 1.0  # 0..255 scaled
    d = load({"name": "image_folder", "path": str(root), "size": 5, "grayscale": True})
    assert d.input_shape == (1, 5, 5)


def test_image_folder_train_and_test_subfolders(tmp_path):
    write_images(tmp_path / "pics" / "train", classes=("a", "b", "c"), n=5, ext="gif")
    write_images(tmp_path / "pics" / "test", classes=("a", "c"), n=2)
    d = load({"name": "image_folder", "path": str(tmp_path / "pics"), "size": 6})
    assert d.class_names == ["a", "b", "c"] and d.num_outputs == 3
    assert len(d.test) == 4 and len(d.train) + len(d.val) == 15


def test_image_folder_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load({"name": "image_folder", "path": str(tmp_path / "nowhere")})
    flat = tmp_path / "flat"
    write_images(flat, classes=("x",), n=2)
    for p in (flat / "x").iterdir():
        p.rename(flat / p.name)
    (flat / "x").rmdir()
    with pytest.raises(DataError, match="flat: no class subfolders .*found 2 image\\(s\\) directly in it"):
        load({"name": "image_folder", "path": str(flat)})
    root = write_images(tmp_path / "r1")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder has no images"):
        load({"name": "image_folder", "path": str(root)})
    root = write_images(tmp_path / "r2")
    (root / "cat" / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match="broken.png: unreadable image"):
        load({"name": "image_folder", "path": str(root)})
    write_images(tmp_path / "r3" / "train")
    write_images(tmp_path / "r3" / "test", classes=("cow",), n=1)
    with pytest.raises(DataError, match="cow: class 'cow' is not among the training classes"):
        load({"name": "image_folder", "path": str(tmp_path / "r3")})


# --- end to end through the command line ----------------------------------------------------------


def _csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[f"{v:.3f}" for v in rng.normal(size=3)] + [["lo", "hi"][i % 2]] for i in range(40)]
    return {"name": "csv", "path": str(write_csv(tmp_path / "d.csv", ["a", "b", "c", "label"], rows)),
            "target": "label"}


def _npz(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(40, 1, 12)), y=rng.normal(size=40),
             x_test=rng.normal(size=(10, 1, 12)), y_test=rng.normal(size=10))
    return {"name": "npz", "path": str(tmp_path / "d.npz")}


def _idx(tmp_path):
    return {"name": "idx", "path": str(write_idx(tmp_path / "idx"))}


def _images(tmp_path):
    return {"name": "image_folder", "path": str(write_images(tmp_path / "pics", n=8)), "size": 8, "val_fraction": 0.3}


@pytest.mark.parametrize("make", [_csv, _npz, _idx, _images], ids=["csv", "npz", "idx", "image_folder"])
def test_cli_trains_on_each_format(tmp_path, capsys, make):
    code, err = cli_train(tmp_path, capsys, make(tmp_path))
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["metrics"]) == {"train", "val", "test"}


def test_cli_bad_data_exits_2_with_the_message(tmp_path, capsys):
    path = write_csv(tmp_path / "bad.csv", ["a", "y"], [[1, 0], ["-inf", 1], [2, 0]])
    code, err = cli_train(tmp_path, capsys, {"name": "csv", "path": str(path), "target": "y"})
    assert code == 2 and "Traceback" not in err
    assert f"{path}: column 'a' has the non-finite value '-inf' at line 3" in err
    code, err = cli_train(tmp_path, capsys, {"name": "npz", "path": str(tmp_path / "gone.npz")})
    assert code == 2 and f"{tmp_path / 'gone.npz'}: no such file" in err
    code, err = cli_train(tmp_path, capsys, {"name": "csv", "path": str(path)})
    assert code == 2 and "data.target" in err


def test_all_errors_are_user_errors():
    assert issubclass(DataError, UserError) and issubclass(ConfigError, UserError)
