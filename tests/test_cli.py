import json
import subprocess
import sys

import pytest

from dnntune.cli import main
from tests.conftest import tiny, write_recipe


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_end_to_end_writes_the_run_folder(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny())
    code, out, err = run(capsys, "train", str(recipe), "--out", str(tmp_path / "run"), "--set", "optim.lr=0.02",
                         "--seed", "3", "--json")
    assert code == 0
    summary = json.loads(out)
    assert set(summary) >= {"metrics", "epochs", "wall_seconds", "params"}
    assert set(summary["metrics"]) == {"train", "val", "test"}
    resolved = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "lr: 0.02" in resolved and "seed: 3" in resolved
    for name in ("model.safetensors", "curves.csv", "curves.jsonl", "summary.json", "checkpoint.pt"):
        assert (tmp_path / "run" / name).exists(), name


def test_progress_and_table_are_shown(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny())
    code, out, err = run(capsys, "train", str(recipe), "--out", str(tmp_path / "run"))
    assert code == 0 and "3/3" in err and "val accuracy" in err
    assert "test" in out and "accuracy" in out


@pytest.mark.parametrize("patch, message", [
    ({"data": {"name": "nope"}}, "data.name: unknown dataset 'nope'; allowed: "),
    ({"model": {"family": "cnn2d"}}, "model.family: cnn2d needs image input, but iris is tabular"),
    ({"optim": {"name": "adam", "lr": {"float": [1e-4, 1e-1], "log": True}}}, "optim.lr: is a search dimension"),
    ({"loss": {"name": "mse", "label_smoothing": 0.1}}, "loss.label_smoothing: unknown key"),
])
def test_bad_recipes_exit_2_with_a_clear_message(tmp_path, capsys, patch, message):
    recipe = write_recipe(tmp_path / "r.yaml", tiny(**patch))
    code, out, err = run(capsys, "train", str(recipe), "--out", str(tmp_path / "run"))
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_and_malformed_files(tmp_path, capsys):
    code, _, err = run(capsys, "train", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml: no such file" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {family: mlp\n")
    code, _, err = run(capsys, "train", str(bad))
    assert code == 2 and "malformed YAML" in err


def test_diverging_run_exits_2_naming_the_epoch(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny(optim={"name": "sgd", "lr": 1e12}))
    code, _, err = run(capsys, "train", str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2 and "diverged" in err and "at epoch" in err
    assert (tmp_path / "run" / "curves.jsonl").exists()


def test_datasets_and_models_list_their_knobs(capsys):
    code, out, _ = run(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and {"linear", "mlp", "cnn1d", "cnn2d"} <= set(rows)
    assert "width" in [k["name"] for k in rows["mlp"]["knobs"]]
    code, out, _ = run(capsys, "datasets")
    assert code == 0 and "mnist1d" in out and "num_samples" in out and "digits" in out


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "dnntune", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "dnntune" in res.stdout
    res = subprocess.run([sys.executable, "-m", "dnntune", "train", "nope.yaml"], capture_output=True, text=True)
    assert res.returncode == 2 and "nope.yaml: no such file" in res.stderr and "Traceback" not in res.stderr
