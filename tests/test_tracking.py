import json

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dnntune.cli import main
from dnntune.config import validate_recipe
from dnntune.engine.trainer import Trainer
from dnntune.errors import TrainingDiverged
from dnntune.report.tracking import fit_tracked, flatten
from dnntune.search import tune
from dnntune.search.storage import open_storage
from dnntune.search.study import TRACKER_KEY
from tests.conftest import tiny, write_recipe

optuna.logging.set_verbosity(optuna.logging.ERROR)
EPOCHS = 3


def events(folder):
    return sorted(folder.glob("events.out.tfevents.*"))


def scalars(folder) -> tuple[dict[str, list[tuple[int, float]]], EventAccumulator]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def test_tensorboard_tracker_writes_per_epoch_scalars_and_an_hparams_summary(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny(train={"epochs": EPOCHS, "batch_size": 32}))
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out), "--tracker", "tensorboard", "--quiet"]) == 0
    assert len(events(out)) == 1
    found, acc = scalars(out)
    for tag in ("train/loss", "val/loss", "val/accuracy", "optim/lr", "optim/batch_size"):
        assert [step for step, _ in found[tag]] == list(range(1, EPOCHS + 1)), tag
    assert found["optim/batch_size"][0][1] == 32
    summary = json.loads((out / "summary.json").read_text())
    assert found["final/val_accuracy"][0][1] == pytest.approx(summary["metrics"]["val"]["accuracy"])
    assert found["final/test_accuracy"][0][1] == pytest.approx(summary["metrics"]["test"]["accuracy"])
    hparams = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert b"optim.lr" in hparams["_hparams_/session_start_info"]
    # jsonl: one line per epoch, beside the event file
    lines = (out / "curves.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(1, EPOCHS + 1))


@pytest.mark.parametrize("tracker", ["jsonl", "none"])
def test_jsonl_and_none_write_no_event_files(tmp_path, tracker):
    recipe = write_recipe(tmp_path / "r.yaml", tiny(train={"epochs": EPOCHS}))
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out), "--tracker", tracker, "--quiet"]) == 0
    assert events(out) == []
    rows = [json.loads(x) for x in (out / "curves.jsonl").read_text().splitlines()]
    assert len(rows) == EPOCHS and {"train_loss", "val_loss", "val_accuracy", "lr", "batch_size"} <= set(rows[0])


def test_an_unknown_tracker_is_refused(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny())
    with pytest.raises(SystemExit) as e:
        main(["train", str(recipe), "--tracker", "wandb"])
    assert e.value.code == 2 and "invalid choice: 'wandb'" in capsys.readouterr().err


def test_the_event_file_is_closed_with_its_epochs_when_training_diverges(tmp_path):
    recipe = validate_recipe(tiny(optim={"name": "sgd", "lr": 1e12}, model={"family": "mlp", "width": 8},
                                  train={"epochs": 5}))
    with pytest.raises(TrainingDiverged):
        fit_tracked(Trainer(recipe, out_dir=tmp_path), "tensorboard")
    assert len(events(tmp_path)) == 1
    scalars(tmp_path)  # readable


def test_tune_tracks_every_trial_in_its_own_folder(tmp_path):
    exp = {"seed": 0, "data": {"name": "iris"}, "model": {"family": "linear"},
           "optim": {"name": "adam", "lr": {"float": [1e-3, 1e-1], "log": True}},
           "train": {"epochs": 2}, "search": {"n_trials": 2, "seed": 0, "pruner": "none"}}
    tune(exp, tmp_path, quiet=True, tracker="tensorboard")
    trials = sorted((tmp_path / "trials").iterdir())
    assert len(trials) == 2
    for folder in trials + [tmp_path / "best"]:
        assert len(events(folder)) == 1, folder
    found, _ = scalars(trials[0])
    assert [s for s, _ in found["val/accuracy"]] == [1, 2]
    study = optuna.load_study(study_name="study", storage=open_storage(str(tmp_path / "study.journal")))
    assert study.user_attrs[TRACKER_KEY] == "tensorboard"


def test_flatten_gives_hparams_tensorboard_accepts():
    flat = flatten({"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "train": {"grad_clip": None, "amp": False}})
    assert flat == {"optim.lr": 0.1, "optim.betas": "[0.9, 0.99]", "train.grad_clip": "none", "train.amp": False}
