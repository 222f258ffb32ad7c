"""Transfer learning: model.init_from and its table, freezing, gradual unfreezing, discriminative lrs, bad input."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dnntune.config import validate_recipe
from dnntune.engine.callbacks import Callback
from dnntune.engine.trainer import Trainer, train
from dnntune.engine.transfer import FreezeSchedule, backbone_blocks, match_source
from dnntune.errors import ConfigError
from dnntune.models import InputSpec, build_model
from dnntune.search import complete_experiment, tune

CNN = {"family": "cnn1d", "channels": 8, "depth": 3, "kernel": 3, "batch_norm": True, "head": "avg"}


def signal(length: int = 40, n: int = 240, **knobs) -> dict:
    return {"name": "mnist1d", "num_samples": n, "final_seq_length": length, "val_fraction": 0.2, **knobs}


def recipe(model=None, train_=None, data=None, **extra) -> dict:
    return {"seed": 0, "data": data or signal(), "model": {**CNN, **(model or {})},
            "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
            "train": {"epochs": 3, "batch_size": 32, "checkpoint": False, **(train_ or {})}, **extra}


def cnn(outputs: int = 10, length: int = 40, **knobs):
    r = validate_recipe(recipe(model=knobs))
    return build_model(r.model, InputSpec("signal", (1, length), "mnist1d"), outputs)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A pretrained run folder (2 epochs) of the CNN."""
    out = tmp_path_factory.mktemp("source")
    train(recipe(train_={"epochs": 2}), out_dir=out)
    return out


# --- loading and its table ---------------------------------------------------------------------------------

def test_a_run_folder_loads_whole_and_the_table_is_printed_and_saved(source, tmp_path, capsys):
    res = train(recipe(model={"init_from": str(source)}, train_={"epochs": 1}), out_dir=tmp_path)
    err = capsys.readouterr().err
    table = json.loads((tmp_path / "transfer.json").read_text())
    n = len(res.model.state_dict())
    assert table["counts"] == {"loaded": n, "skipped": 0, "new": 0}
    assert f"init_from {source}: {n} tensors loaded, 0 skipped, 0 newly initialized" in err


def test_the_weights_really_come_from_the_source_before_training(source):
    t = Trainer(validate_recipe(recipe(model={"init_from": str(source)})))
    t.setup()
    from safetensors.torch import load_file

    saved = load_file(str(source / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in t.model.state_dict().items())


def test_a_head_for_another_number_of_classes_is_skipped_and_reinitialized(tmp_path):
    src = cnn(outputs=3)
    torch.save(src.state_dict(), tmp_path / "three.pt")
    res = train(recipe(model={"init_from": str(tmp_path / "three.pt")}, train_={"epochs": 1}), out_dir=tmp_path / "r")
    table = json.loads((tmp_path / "r" / "transfer.json").read_text())
    assert {s["name"] for s in table["skipped"]} == {"head.weight", "head.bias"}
    assert all("another number of outputs" in s["reason"] for s in table["skipped"])
    assert {s["name"] for s in table["new"]} == {"head.weight", "head.bias"}
    assert table["counts"]["loaded"] == len(res.model.state_dict()) - 2


def test_init_strict_makes_a_mismatch_an_error(tmp_path):
    torch.save(cnn(outputs=3).state_dict(), tmp_path / "three.pt")
    with pytest.raises(ConfigError, match=r"model.init_strict: .*head.weight: shape mismatch"):
        Trainer(validate_recipe(recipe(model={"init_from": str(tmp_path / "three.pt"), "init_strict": True}))).setup()


def test_another_input_length_loads_whole_with_a_global_pooling_head():
    table = match_source(cnn(length=60), cnn(length=40).state_dict(), "src", ("head",))
    assert not table.skipped and not table.new


def test_another_input_length_with_a_flatten_head_says_why_the_head_is_skipped():
    from dnntune.engine.transfer import _input_hint

    model = cnn(length=60, head="flatten")
    table = match_source(model, cnn(length=40, head="flatten").state_dict(), "src", ("head",), hint=_input_hint(model))
    assert [s["name"] for s in table.skipped] == ["head.weight"]
    assert "shape mismatch: source 10×40, model 10×56" in table.skipped[0]["reason"]
    assert "flattens its features" in table.skipped[0]["reason"]


def test_a_resumed_run_keeps_its_checkpoint_not_the_source(source, tmp_path):
    import shutil

    from dnntune.engine.checkpoint import save_weights

    src = shutil.copytree(source, tmp_path / "src")
    r = recipe(model={"init_from": str(src)}, train_={"epochs": 2, "checkpoint": True})
    first = {k: v.clone() for k, v in train(r, out_dir=tmp_path / "run").model.state_dict().items()}
    save_weights(src / "model.safetensors", cnn())  # the source changes: re-applying it would show
    again = train(r, out_dir=tmp_path / "run").model.state_dict()  # resumes the finished run's checkpoint
    assert all(torch.equal(first[k], again[k]) for k in first)
    from dnntune.engine.transfer import load_source

    assert load_source(str(tmp_path / "run" / "checkpoint.pt")).keys() == first.keys()  # a checkpoint is a source too


# --- freezing ------------------------------------------------------------------------------------------------

class Snapshots(Callback):
    """The model's state at fit start and after each epoch; requires_grad of each top-level part per epoch."""

    def __init__(self):
        self.states, self.trainable = [], []

    def on_fit_start(self, trainer):
        self.states.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    def on_epoch_start(self, trainer, epoch):
        self.trainable.append({n: all(p.requires_grad for p in m.parameters()) for n, m in trainer.model.named_modules()
                               if n and any(True for _ in m.parameters())})

    def on_epoch_end(self, trainer, epoch, row):
        self.states.append({k: v.clone() for k, v in trainer.model.state_dict().items()})


def _fit(raw, *callbacks):
    t = Trainer(validate_recipe(raw), callbacks=callbacks)
    t.fit()
    return t


def test_a_frozen_backbone_and_its_batch_norm_statistics_stay_unchanged_then_train():
    snap = Snapshots()
    _fit(recipe(train_={"freeze": {"modules": "backbone", "epochs": 2}}), snap)
    s0, s1, s2, s3 = snap.states
    backbone = [k for k in s0 if k.startswith("features.")]
    assert any("running_mean" in k for k in backbone) and any("running_var" in k for k in backbone)
    for k in backbone:  # parameters and batch-norm statistics bit-identical while frozen
        assert torch.equal(s0[k], s1[k]) and torch.equal(s1[k], s2[k]), k
    assert not torch.equal(s0["head.weight"], s1["head.weight"])  # the head trains meanwhile
    changed = [k for k in backbone if not torch.equal(s2[k], s3[k])]
    assert {"features.0.weight", "features.1.running_mean", "features.1.running_var"} <= set(changed)


def test_freeze_names_modules_and_only_those_freeze():
    snap = Snapshots()
    _fit(recipe(train_={"epochs": 1, "freeze": {"modules": ["features.0", "features.1"], "epochs": 1}}), snap)
    s0, s1 = snap.states
    assert torch.equal(s0["features.0.weight"], s1["features.0.weight"])
    assert torch.equal(s0["features.1.running_mean"], s1["features.1.running_mean"])
    assert not torch.equal(s0["features.4.weight"], s1["features.4.weight"])


def test_gradual_unfreezing_goes_from_the_head_down_one_block_per_period():
    freeze = {"modules": "backbone", "epochs": 1, "unfreeze_every": 1}
    snap = Snapshots()
    t = _fit(recipe(train_={"epochs": 4, "freeze": freeze}), snap)
    fs = next(cb for cb in t.callbacks if isinstance(cb, FreezeSchedule))
    blocks = [b.name for b in backbone_blocks(t.model, "cnn1d")]
    assert blocks == ["features.0", "features.4", "features.8"]  # each conv with its batch norm
    assert fs.log == [(1, "features.8"), (2, "features.4"), (3, "features.0")]
    trainable = [{n: snap.trainable[e][n] for n in ("features.0", "features.1", "features.4", "features.8", "head")}
                 for e in range(4)]
    assert trainable[0] == {"features.0": False, "features.1": False, "features.4": False, "features.8": False,
                            "head": True}
    assert trainable[1]["features.8"] and not trainable[1]["features.4"]
    assert trainable[2]["features.4"] and not trainable[2]["features.0"] and not trainable[2]["features.1"]
    assert all(trainable[3].values())


# --- discriminative learning rates ----------------------------------------------------------------------------

class Lrs(Callback):
    def __init__(self):
        self.rows = []

    def after_backward(self, trainer, step):
        self.rows.append([g["lr"] for g in trainer.optimizer.param_groups])


def test_a_backbone_multiplier_keeps_its_ratio_through_warmup_and_decay():
    lrs = Lrs()
    t = _fit(recipe(schedule={"name": "cosine", "warmup_epochs": 1},
                    train_={"epochs": 3, "backbone_lr_mult": 0.1}), lrs)
    groups = t.optimizer.param_groups
    head_ids = {id(p) for p in t.model.head.parameters()}
    is_head = [any(id(p) in head_ids for p in g["params"]) for g in groups]
    assert any(is_head) and not all(is_head)
    for row in lrs.rows[1:]:  # the lr of step 0 of the warm-up is 0
        head = [lr for lr, h in zip(row, is_head) if h]
        back = [lr for lr, h in zip(row, is_head) if not h]
        assert all(b == pytest.approx(0.1 * head[0], rel=1e-9) for b in back) and len(set(head)) == 1
    peaks = [row[is_head.index(True)] for row in lrs.rows]
    assert max(peaks) == pytest.approx(0.01, rel=0.05) and peaks[-1] < 0.5 * max(peaks) and peaks[1] < max(peaks)


def test_layer_decay_scales_each_block_below_the_head():
    t = Trainer(validate_recipe(recipe(optim={"name": "sgd", "lr": 0.1},
                                       train_={"layer_decay": 0.5, "backbone_lr_mult": 0.1})))
    t.setup()
    by_param = {id(p): g["base_lr"] for g in t.optimizer.param_groups for p in g["params"]}
    m = t.model
    assert by_param[id(m.head.weight)] == pytest.approx(0.1)
    assert by_param[id(m.features[8].weight)] == pytest.approx(0.1 * 0.1 * 0.5)
    assert by_param[id(m.features[9].weight)] == pytest.approx(0.1 * 0.1 * 0.5)  # its batch norm
    assert by_param[id(m.features[4].weight)] == pytest.approx(0.1 * 0.1 * 0.25)
    assert by_param[id(m.features[0].weight)] == pytest.approx(0.1 * 0.1 * 0.125)


def test_the_fine_tune_preset_freezes_then_trains_the_backbone_at_lr_over_lr_mult():
    snap, lrs = Snapshots(), Lrs()
    t = _fit(recipe(train_={"epochs": 2, "fine_tune": {"freeze_epochs": 1, "lr_mult": 100}}), snap, lrs)
    s0, s1, s2 = snap.states
    assert torch.equal(s0["features.0.weight"], s1["features.0.weight"])
    assert not torch.equal(s1["features.0.weight"], s2["features.0.weight"])
    assert sorted({g["base_lr"] for g in t.optimizer.param_groups}) == pytest.approx([1e-4, 1e-2])


def test_fine_tune_with_freeze_is_refused():
    with pytest.raises(ConfigError, match="train: fine_tune is a preset of freeze and backbone_lr_mult"):
        validate_recipe(recipe(train_={"fine_tune": {}, "freeze": {"epochs": 1}}))


# --- search ----------------------------------------------------------------------------------------------------

def test_the_default_space_with_init_from_adds_the_fine_tuning_knobs():
    model = {**CNN, "init_from": "runs/pretrain"}
    exp = complete_experiment({"data": {"name": "mnist1d"}, "model": model})
    assert exp["model"] == model  # the source's architecture, not a searched one
    assert exp["train"]["freeze"]["epochs"] == {"int": [0, 3]}
    assert exp["train"]["backbone_lr_mult"] == {"float": [0.01, 1.0], "log": True}
    assert exp["train"]["layer_decay"] == {"float": [0.5, 1.0]}
    assert "optim" in exp and "freeze" not in complete_experiment({"data": {"name": "mnist1d"}})["train"]


def test_fine_tuning_knobs_are_searchable_dimensions(source, tmp_path):
    exp = recipe(model={"init_from": str(source)}, train_={
        "epochs": 1, "freeze": {"modules": "backbone", "epochs": {"choice": [0, 1]}},
        "backbone_lr_mult": {"float": [0.01, 1.0], "log": True}})
    exp["search"] = {"n_trials": 2, "pruner": "none", "sampler": "random", "final": "best_trial"}
    summary = tune(exp, tmp_path, quiet=True)
    assert summary["trials"]["complete"] == 2
    chosen = yaml.safe_load((tmp_path / "best" / "recipe.yaml").read_text())["train"]
    assert chosen["freeze"]["epochs"] in (0, 1) and 0.01 <= chosen["backbone_lr_mult"] <= 1.0
    assert (tmp_path / "best" / "transfer.json").exists()


# --- bad input through the CLI -----------------------------------------------------------------------------------

def _cli_train(tmp_path: Path, raw: dict):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "dnntune", "train", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env)


def _bad_files(tmp_path: Path) -> dict:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"w": argparse.Namespace(a=1)}, tmp_path / "pickle.pt")
    return {"missing": (str(tmp_path / "nope.safetensors"), "no such file or run folder"),
            "not_a_state_dict": (str(tmp_path / "list.pt"), "not a state_dict"),
            "refused_pickle": (str(tmp_path / "pickle.pt"), "torch.load(weights_only=True) refused this pickle")}


@pytest.mark.parametrize("case", ["missing", "not_a_state_dict", "refused_pickle", "unknown_module"])
def test_bad_transfer_input_exits_2_with_a_clear_message(tmp_path, case):
    if case == "unknown_module":
        raw = recipe(train_={"freeze": {"modules": ["features", "backbon"], "epochs": 1}}, data=signal(n=60))
        expected = "train.freeze.modules: 'backbon' is not a module of this cnn1d model; allowed: backbone"
    else:
        path, expected = _bad_files(tmp_path)[case]
        raw = recipe(model={"init_from": path}, data=signal(n=60))
    res = _cli_train(tmp_path, raw)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and expected in res.stderr, res.stderr


def test_a_family_without_a_backbone_refuses_backbone_knobs():
    raw = {"data": {"name": "iris"}, "model": {"family": "linear"}, "train": {"epochs": 1, "backbone_lr_mult": 0.1}}
    with pytest.raises(ConfigError, match="train: linear has no backbone"):
        Trainer(validate_recipe(raw)).setup()
