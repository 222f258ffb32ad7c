import json
import math

import pytest
import torch

from dnntune.config import validate_recipe
from dnntune.data import load_data
from dnntune.engine import Trainer, train
from dnntune.engine.checkpoint import load_checkpoint, load_weights
from dnntune.errors import TrainingDiverged
from tests.conftest import tiny


def test_same_seed_same_metrics_on_cpu():
    r = validate_recipe(tiny(augment={"noise": 0.1}, train={"epochs": 3, "batch_size": 16}))
    a, b = train(r), train(r)
    assert a.metrics == b.metrics
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    c = train(r.model_copy(update={"seed": 1}))
    assert [h["train_loss"] for h in c.history] != [h["train_loss"] for h in a.history]


def test_run_folder_contents(tmp_path):
    r = validate_recipe(tiny())
    res = train(r, out_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["metrics"]) == {"train", "val", "test"}
    assert summary["epochs"] == 3 and summary["params"] == res.params and summary["wall_seconds"] > 0
    assert "confusion_matrix" in summary["metrics"]["test"]
    assert (tmp_path / "recipe.yaml").exists() and (tmp_path / "curves.csv").exists()
    assert len((tmp_path / "curves.jsonl").read_text().splitlines()) == 3
    model = res.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.data.zero_()
    load_weights(tmp_path / "model.safetensors", model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    r = validate_recipe(tiny(train={"epochs": 6, "batch_size": 16, "checkpoint_every": 0}, augment={"noise": 0.05}))
    full = train(r)

    class Stop(Exception):
        pass

    def kill_after_3(epoch, row):
        if epoch == 3:
            raise Stop

    with pytest.raises(Stop):
        Trainer(r, out_dir=tmp_path, on_epoch_end=kill_after_3).fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 2  # 0-based: epochs 1-3 are in the checkpoint
    resumed = Trainer(r, out_dir=tmp_path).fit()
    assert resumed.epochs == 6
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in full.history])
    assert resumed.metrics["test"]["accuracy"] == full.metrics["test"]["accuracy"]


def test_nan_loss_at_the_first_epoch_stops_with_its_epoch_and_curves_and_no_checkpoint(tmp_path):
    r = validate_recipe(tiny(optim={"name": "sgd", "lr": 1e12},
                             train={"epochs": 5, "batch_size": 16, "checkpoint_every": 0}))
    with pytest.raises(TrainingDiverged) as e:
        train(r, out_dir=tmp_path)
    assert e.value.epoch == 1 and "at epoch 1 " in str(e.value) and "checkpoint" not in str(e.value)
    rows = [json.loads(line) for line in (tmp_path / "curves.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and not math.isfinite(rows[0]["train_loss"])
    assert not (tmp_path / "checkpoint.pt").exists()  # no good epoch to keep


def test_nan_loss_later_keeps_the_last_good_checkpoint_and_the_run_resumes_from_it(tmp_path):
    r = validate_recipe(tiny(train={"epochs": 5, "batch_size": 16, "checkpoint_every": 0}))
    full = train(r)

    def poison_after_epoch_2(epoch, row):  # runs after epoch 2's checkpoint is written
        if epoch == 2:
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.fill_(math.nan)

    trainer = Trainer(r, out_dir=tmp_path, on_epoch_end=poison_after_epoch_2)
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    assert e.value.epoch == 3 and "the last good checkpoint (epoch 2)" in str(e.value)
    rows = [json.loads(line) for line in (tmp_path / "curves.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3] and not math.isfinite(rows[-1]["train_loss"])
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1  # 0-based: epochs 1-2, the weights before they were poisoned
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    kept = [h["seconds"] for h in state["history"]]
    resumed = Trainer(r, out_dir=tmp_path).fit()  # continues at epoch 3 from that checkpoint
    assert resumed.epochs == 5 and [h["seconds"] for h in resumed.history[:2]] == kept  # 1-2 not retrained
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in full.history])
    assert resumed.metrics["test"]["accuracy"] == full.metrics["test"]["accuracy"]
    rows = [json.loads(line) for line in (tmp_path / "curves.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4, 5] and all(math.isfinite(r["train_loss"]) for r in rows)


def test_checkpoints_are_written_by_time_and_after_the_last_epoch(tmp_path):
    seen = []

    def spy(epoch, row):
        path = tmp_path / "checkpoint.pt"
        seen.append(load_checkpoint(path)["epoch"] if path.exists() else None)

    r = validate_recipe(tiny(train={"epochs": 4, "batch_size": 16, "checkpoint_every": 3600}))
    Trainer(r, out_dir=tmp_path, on_epoch_end=spy).fit()
    assert seen == [None, None, None, 3]  # none within the hour, then the last epoch (0-based 3)
    again = Trainer(r, out_dir=tmp_path).fit()  # a finished run resumes at its end: nothing is retrained
    assert [h["seconds"] for h in again.history] == [h["seconds"] for h in load_checkpoint(
        tmp_path / "checkpoint.pt")["history"]]


def test_ties_of_the_validation_metric_go_to_the_lower_validation_log_loss():
    res = train(validate_recipe(tiny(train={"epochs": 30, "batch_size": 16})))
    best = res.history[res.best_epoch - 1]
    top = max(h["val_accuracy"] for h in res.history)
    ties = [h for h in res.history if h["val_accuracy"] == top]
    assert len(ties) >= 2  # iris' 12 validation samples saturate: the tie-break decides
    assert best["val_accuracy"] == top and best["val_log_loss"] == min(h["val_log_loss"] for h in ties)
    assert res.metrics["val"]["log_loss"] == pytest.approx(best["val_log_loss"])  # its weights were restored


def test_early_stopping_and_restore_best():
    r = validate_recipe(tiny(train={"epochs": 50, "batch_size": 16, "early_stopping": {"patience": 2}},
                             optim={"name": "sgd", "lr": 1e-6}))
    res = train(r)
    assert res.stopped == "early_stopping" and res.epochs < 50
    assert res.metrics["val"]["accuracy"] == max(h["val_accuracy"] for h in res.history)


def test_hook_can_stop_and_sees_metrics():
    seen = []

    def hook(epoch, row):
        seen.append((epoch, row["val_accuracy"], row["lr"]))
        return epoch == 2

    res = train(validate_recipe(tiny(train={"epochs": 10})), on_epoch_end=hook)
    assert res.stopped == "callback" and res.epochs == 2 and [s[0] for s in seen] == [1, 2]


def test_batch_growth_on_schedule():
    r = validate_recipe(tiny(train={"epochs": 4, "batch_size": 8, "batch_growth": {"every_epochs": 1,
                                                                                      "factor": 2}}))
    assert [h["batch_size"] for h in train(r).history] == [8, 16, 32, 64]


def test_regression_on_diabetes_with_l1_and_clipping():
    r = validate_recipe({"data": {"name": "diabetes"}, "model": {"family": "mlp", "width": 32},
                         "optim": {"name": "adamw", "lr": 0.01},
                         "train": {"epochs": 20, "l1": 1e-4, "grad_clip": 1.0}})
    res = train(r)
    assert set(res.metrics["test"]) >= {"mse", "mae", "r2"}
    assert res.metrics["test"]["r2"] > 0.2


def test_l1_penalty_shrinks_weights():
    base = tiny(train={"epochs": 10, "batch_size": 16})
    plain = train(validate_recipe(base)).model
    sparse = train(validate_recipe({**base, "train": {**base["train"], "l1": 0.01}})).model

    def l1(m):
        return sum(p.abs().sum() for p in m.parameters() if p.ndim >= 2)

    assert l1(sparse) < l1(plain)


def test_normalization_uses_train_split_only():
    r = validate_recipe(tiny())
    data = load_data(r.data, r.seed)
    assert torch.allclose(data.train.x.mean(0), torch.zeros(4), atol=1e-5)
    assert not torch.allclose(data.test.x.mean(0), torch.zeros(4), atol=1e-3)
    assert len(data.test) == 30 and len(data.val) == 12
    # stratified: every class in every split
    for split in (data.train, data.val, data.test):
        assert set(split.y.tolist()) == {0, 1, 2}


def test_folds_partition_the_non_test_data_and_keep_the_test_split():
    r = validate_recipe(tiny(data={"name": "iris", "normalize": False}))
    plain = load_data(r.data, r.seed)
    folds = [load_data(r.data, r.seed, (i, 5)) for i in range(5)]
    rows = lambda x: sorted(map(tuple, x.tolist()))  # noqa: E731
    for d in folds:
        assert torch.equal(d.test.x, plain.test.x) and torch.equal(d.test.y, plain.test.y)
        assert len(d.val) == 24 and len(d.train) == 96
        assert d.val.y.bincount().tolist() == [8, 8, 8]  # stratified
        assert rows(torch.cat([d.train.x, d.val.x])) == rows(torch.cat([plain.train.x, plain.val.x]))
    vals = torch.cat([d.val.x for d in folds])
    assert rows(vals) == rows(torch.cat([plain.train.x, plain.val.x]))  # every sample validates exactly once
    again = load_data(r.data, r.seed, (2, 5))
    assert torch.equal(again.val.x, folds[2].val.x)  # seeded


def test_more_folds_than_samples_is_a_data_error_naming_search_folds(tmp_path):
    from dnntune.errors import DataError

    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(10)))
    r = validate_recipe(tiny(data={"name": "csv", "path": str(path), "target": "y"}))
    with pytest.raises(DataError, match=r"search.folds: 9 folds need at least 9 non-test samples; csv has 8"):
        load_data(r.data, r.seed, (0, 9))


def test_no_validation_split_trains_on_all_non_test_data():
    r = validate_recipe(tiny(data={"name": "iris", "val_fraction": 0}))
    result = train(r)
    assert len(result.history) == 3 and "val" not in result.metrics and result.best_epoch is None
    assert result.metrics["test"]["accuracy"] > 0.6  # chance: 1/3
    data = load_data(r.data, r.seed)
    assert len(data.train) == 120 and len(data.val) == 0 and len(data.test) == 30


@pytest.mark.parametrize("section, key", [({"schedule": {"name": "plateau"}}, "schedule.name: plateau"),
                                          ({"train": {"epochs": 3, "early_stopping": {"patience": 2}}},
                                           "train.early_stopping.patience")])
def test_what_needs_a_validation_split_says_so_without_one(section, key):
    from dnntune.errors import ConfigError

    r = validate_recipe(tiny(data={"name": "iris", "val_fraction": 0}, **section))
    with pytest.raises(ConfigError, match=f"{key}: needs a validation split.*val_fraction"):
        train(r)


def test_the_retrain_replays_the_plateau_decisions_of_the_run_it_repeats():
    from dnntune.errors import ConfigError
    from dnntune.search.final import merge_train_val

    r = validate_recipe(tiny(schedule={"name": "plateau", "patience": 1, "factor": 0.5},
                             optim={"name": "adam", "lr": 0.2}, train={"epochs": 12, "batch_size": 32}))
    first = train(r)
    flags = [bool(row["improved"]) for row in first.history]
    assert any(flags) and not all(flags)  # the plateau schedule had something to react to
    merged = merge_train_val(load_data(r.data, r.seed))
    again = Trainer(r, merged, replay=flags).fit()
    assert [row["lr"] for row in again.history] == [row["lr"] for row in first.history]
    assert min(row["lr"] for row in again.history) < 0.2  # it did decay
    with pytest.raises(ConfigError, match="schedule.name: plateau: needs a validation split"):
        Trainer(r, merged).fit()
