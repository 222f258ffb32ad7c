"""User model families and datasets: plugin modules outside the package, entry points, bad plugins, the
Python API's own data, and ``data.kind``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pydantic import BaseModel
from torch import nn

import dnntune
from dnntune.config import validate_recipe
from dnntune.data import load_data, prepare
from dnntune.data.user import as_raw
from dnntune.errors import ConfigError
from dnntune.models import MODELS, InputSpec, build_model, model_parts

SRC = str(Path(__file__).parents[1] / "src")

PLUGIN = '''
import os, pathlib
from pydantic import BaseModel, Field
from torch import nn
import dnntune

if os.environ.get("TP_MARKS"):  # which processes imported this module
    pathlib.Path(os.environ["TP_MARKS"], f"{__name__}-{os.getpid()}").touch()


class Knobs(BaseModel):
    width: int = Field(8, ge=2, le=64)


class Net(nn.Module):
    def __init__(self, d, w, out):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, w), nn.ReLU())
        self.out = nn.Linear(w, out)

    def forward(self, x):
        return self.out(self.body(x.flatten(1)))


@dnntune.register_model("FAMILY", Knobs, kinds=("tabular",))
def build(knobs, spec, num_outputs):
    """A user's net."""
    return Net(spec.flat_size, knobs.width, num_outputs)
'''


def _env(*paths: Path, **extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([SRC, *map(str, paths)]), **extra}


def _dnntune(*argv, cwd: Path, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnntune", *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def _experiment(plugins: list[str], family: str, workers: int = 2) -> dict:
    return {"plugins": plugins, "seed": 0, "data": {"name": "iris"},
            "model": {"family": family, "width": {"int": [4, 16]}},
            "optim": {"name": "adam", "lr": 0.02}, "train": {"epochs": 2, "batch_size": 32, "checkpoint": False},
            "search": {"n_trials": 2, "workers": workers, "pruner": "none", "sampler": "random", "seed": 0}}


def _check_tuned(run: Path, marks: Path, module: str, family: str) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trials"]["complete"] == 2
    pids = [p.name for p in marks.iterdir() if p.name.startswith(module)]
    assert len(pids) >= 3, pids  # the tune process and both worker processes imported the plugin
    best = run / "best"
    assert yaml.safe_load((best / "recipe.yaml").read_text())["model"]["family"] == family
    assert json.loads((best / "summary.json").read_text())["model_plugin"]["family"] == family


def test_a_plugin_beside_the_experiment_is_trained_tuned_by_2_workers_and_loaded(tmp_path, monkeypatch):
    plug = tmp_path / "user"
    plug.mkdir()
    (plug / "tp_file_models.py").write_text(PLUGIN.replace("FAMILY", "tp_file_net"))
    exp = plug / "exp.yaml"
    exp.write_text(yaml.safe_dump(_experiment(["tp_file_models"], "tp_file_net")))
    marks = tmp_path / "marks"
    marks.mkdir()
    env, elsewhere = _env(TP_MARKS=str(marks)), tmp_path  # the plugin is not on PYTHONPATH: found beside exp.yaml
    res = _dnntune("tune", exp, "--out", tmp_path / "run", "--quiet", cwd=elsewhere, env=env)
    assert res.returncode == 0, res.stderr
    _check_tuned(tmp_path / "run", marks, "tp_file_models", "tp_file_net")
    # the final model (retrained on train+val) is loaded again, the module on the path (as with PYTHONPATH)
    monkeypatch.syspath_prepend(str(plug))
    run = dnntune.load_run(tmp_path / "run")
    assert type(run.model).__module__ == "tp_file_models"
    assert run.predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]).indices.shape == (2,)
    rows = tmp_path / "x.csv"
    rows.write_text("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    # the module is gone: load_run / predict name it and the run folder; a remote worker names it too
    # (and a run folder cannot bring its own code: a module of that name inside it is not imported)
    (plug / "tp_file_models.py").rename(plug / "moved.py")
    (tmp_path / "run" / "best" / "tp_file_models.py").write_text("raise SystemExit('imported!')")
    res = _dnntune("predict", tmp_path / "run", rows, cwd=elsewhere, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "imported!" not in res.stderr
    assert "plugin tp_file_models: module not found" in res.stderr and str(tmp_path / "run" / "best") in res.stderr
    assert f"at training time it was imported from {plug}" in res.stderr
    res = _dnntune("worker", "--storage", tmp_path / "run" / "study.journal", "--study", "exp", "--out",
                   tmp_path / "w", cwd=elsewhere, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "plugin tp_file_models: module not found" in res.stderr


def _tiny_package(root: Path) -> None:
    """An installed-looking package: tinypkg/ and a tinypkg-0.1.dist-info with an entry point."""
    (root / "tinypkg").mkdir(parents=True)
    (root / "tinypkg" / "__init__.py").write_text("")
    (root / "tinypkg" / "models.py").write_text(PLUGIN.replace("FAMILY", "tp_tiny_net"))
    info = root / "tinypkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dnntune.plugins]\ntiny = tinypkg.models\n")


def test_an_entry_point_is_listed_without_import_and_used_when_named(tmp_path, monkeypatch, capsys):
    from dnntune.cli import main

    site = tmp_path / "site"
    _tiny_package(site)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = _env(site, TP_MARKS=str(marks))
    res = _dnntune("models", "--json", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["tiny"]["loaded"] is False and rows["tiny"]["entry_point"] == "tinypkg.models"
    assert "tp_tiny_net" not in rows and not list(marks.iterdir())  # discovered, never imported
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(_experiment(["tiny"], "tp_tiny_net")))
    res = _dnntune("tune", exp, "--out", tmp_path / "run", "--quiet", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    _check_tuned(tmp_path / "run", marks, "tinypkg.models", "tp_tiny_net")
    # in this process: the installed package is on sys.path; load_run imports what the run recorded
    monkeypatch.syspath_prepend(str(site))
    run = dnntune.load_run(tmp_path / "run")
    assert type(run.model).__module__ == "tinypkg.models" and run.recipe.plugins[0] == "tiny"
    assert main(["models", "--plugin", "tiny", "--json"]) == 0
    assert "tp_tiny_net" in {r["name"] for r in json.loads(capsys.readouterr().out)}


BAD_PLUGINS = {
    "not_found": (None, "plugin tp_nowhere: module not found"),
    "import_error": ("import tp_not_a_real_dependency\n",
                     "plugin MODULE: importing it failed: ModuleNotFoundError: No module named "
                     "'tp_not_a_real_dependency' (MODULE.py, line 1)"),
    "clash": (PLUGIN.replace('"FAMILY"', '"mlp"'), "plugin MODULE: model family 'mlp' clashes with the model family "
              "of that name (built in)"),
    "knobs_not_pydantic": (PLUGIN.replace("class Knobs(BaseModel):", "class Knobs:"),
                           "plugin MODULE: model family 'FAMILY': knobs must be a pydantic model"),
    "not_a_module": (PLUGIN.replace("return Net(spec.flat_size, knobs.width, num_outputs)", "return 'a net'"),
                     "plugin MODULE, model family 'FAMILY': the builder returned str, not a torch.nn.Module"),
    "wrong_output": (PLUGIN.replace("knobs.width, num_outputs)", "knobs.width, num_outputs + 1)"),
                     "plugin MODULE, model family 'FAMILY': on a batch of 2 inputs of shape (2, 4) the model's "
                     "output has shape (2, 4); expected (2, 3)"),
}


def _bad_case(folder: Path, case: str, command: str, where: str) -> tuple[Path, str]:
    """The recipe (train) or experiment (tune) file naming the bad plugin of ``case``, and the message expected."""
    module, family = f"tp_bad_{case}_{where}", f"tp_bad_{case}_{where}_net"  # unique: one test process holds many
    source, message = BAD_PLUGINS[case]
    if source is not None:
        (folder / f"{module}.py").write_text(source.replace("FAMILY", family))
    recipe = _experiment(["tp_nowhere" if source is None else module], family, workers=1)
    if command == "train":
        recipe.pop("search")
        recipe["model"]["width"] = 4
    (folder / "r.yaml").write_text(yaml.safe_dump(recipe))
    return folder / "r.yaml", message.replace("MODULE", module).replace("FAMILY", family)


@pytest.mark.parametrize("case", sorted(BAD_PLUGINS))
def test_bad_plugins_exit_2_naming_the_plugin_without_a_traceback(tmp_path, case):
    recipe, message = _bad_case(tmp_path, case, "train", "cli")
    res = _dnntune("train", recipe, "--out", tmp_path / "run", "--quiet", cwd=tmp_path, env=_env())
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("case", sorted(BAD_PLUGINS))
def test_bad_plugins_stop_a_study_before_its_first_trial(tmp_path, case, capsys, monkeypatch):
    from dnntune.cli import main

    recipe, message = _bad_case(tmp_path, case, "tune", "tune")
    monkeypatch.chdir(tmp_path)
    assert main(["tune", str(recipe), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "trials").exists()


def test_plugin_on_the_command_line_of_every_command(tmp_path):
    from dnntune.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert any("--plugin" in a.option_strings for a in sub._actions), name
    res = _dnntune("datasets", "--plugin", "tp_bad_nowhere", cwd=tmp_path, env=_env())
    assert res.returncode == 2 and "plugin tp_bad_nowhere: module not found" in res.stderr


# --- the Python API: registrations in the user's own code, own data -------------------------------


class PlainKnobs(BaseModel):
    width: int = 8


class TwoLayer(nn.Module):
    def __init__(self, d: int, w: int, out: int):
        super().__init__()
        self.hidden = nn.Linear(d, w)
        self.norm = nn.LayerNorm(w)
        self.last = nn.Linear(w, out)

    def forward(self, x):
        return self.last(torch.relu(self.norm(self.hidden(x.flatten(1)))))


@dnntune.register_model("tp_api_net", PlainKnobs)
def _tp_api_net(knobs, spec, num_outputs):
    return TwoLayer(spec.flat_size, knobs.width, num_outputs)


@dnntune.register_model("tp_api_signal_net", PlainKnobs, kinds=("signal",))
def _tp_api_signal_net(knobs, spec, num_outputs):
    return TwoLayer(spec.flat_size, knobs.width, num_outputs)


def test_plain_pydantic_knobs_are_made_strict_like_built_in_ones():
    base = {"data": {"name": "iris"}, "model": {"family": "tp_api_net", "width": 5}}
    recipe = validate_recipe(base)
    assert recipe.model.knobs.width == 5 and recipe.plugins == [__name__]
    with pytest.raises(ConfigError, match="model.widht: unknown key; allowed: .*width"):
        validate_recipe({**base, "model": {"family": "tp_api_net", "widht": 5}})
    with pytest.raises(ConfigError, match="model.width: Input should be a valid integer"):
        validate_recipe({**base, "model": {"family": "tp_api_net", "width": "wide"}})
    with pytest.raises(Exception, match="frozen"):
        recipe.model.knobs.width = 3


def test_model_parts_default_rule_and_declared_parts_of_every_built_in_family():
    recipe = validate_recipe({"data": {"name": "iris"}, "model": {"family": "tp_api_net"}})
    model = build_model(recipe.model, InputSpec("tabular", (4,)), 3)
    parts = model_parts(model, "tp_api_net")
    assert parts.head == ("last",) and parts.backbone == ("hidden", "norm")
    specs = {"tabular": InputSpec("tabular", (6,)), "signal": InputSpec("signal", (1, 16)),
             "image": InputSpec("image", (1, 8, 8)),
             "sequence": InputSpec("sequence", (12,), info={"vocab_size": 50, "pad_id": 0, "max_length": 12})}
    for entry in MODELS:
        if entry.meta.get("plugin"):
            continue
        for kind in entry.meta["kinds"]:  # every input variant a family builds
            m = build_model(validate_recipe({"data": {"name": "iris"}, "model": {"family": entry.name}}).model,
                            specs[kind], 3)
            p = model_parts(m, entry.name)
            backbone, head = p.parameters(m, "backbone"), p.parameters(m, "head")
            assert head and {id(t) for t in backbone + head} == {id(t) for t in m.parameters()}, (entry.name, kind)
            assert len(backbone) + len(head) == len(list(m.parameters())), (entry.name, kind)  # each one once


def _blobs(n: int = 90, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 5)).astype(np.float32) + y[:, None]
    return x, y


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.as_tensor(self.x[i]), int(self.y[i])


def test_arrays_tensors_and_a_dataset_get_the_same_splits_and_statistics_as_npz(tmp_path):
    x, y = _blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    section = validate_recipe({"data": {"name": "npz", "path": str(tmp_path / "d.npz")},
                               "model": {"family": "mlp"}}).data
    ref = load_data(section, seed=3)
    for given in ((x, y), (torch.as_tensor(x), torch.as_tensor(y)), {"x": x, "y": y}, PairDataset(x, y)):
        d = prepare(as_raw(given), section, seed=3)
        for split in ("train", "val", "test"):
            assert torch.equal(getattr(d, split).x, getattr(ref, split).x), (type(given), split)
            assert torch.equal(getattr(d, split).y, getattr(ref, split).y), (type(given), split)
        assert torch.equal(d.mean, ref.mean) and torch.equal(d.std, ref.std)
    # the statistics are the training split's only
    raw_train = ref.train.x * ref.std + ref.mean
    assert torch.allclose(ref.mean, raw_train.mean(0), atol=1e-5)


def test_train_on_own_data_matches_the_same_data_from_a_file(tmp_path):
    x, y = _blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    common = {"seed": 1, "model": {"family": "tp_api_net", "width": 6}, "optim": {"name": "adam", "lr": 0.01},
              "train": {"epochs": 2, "batch_size": 16}}
    from_file = dnntune.train({**common, "data": {"name": "npz", "path": str(tmp_path / "d.npz")}})
    from_arrays = dnntune.train(common, out_dir=tmp_path / "run", data=(x, y))
    from_dataset = dnntune.train(common, data=PairDataset(x, y), num_workers=0)
    for r in (from_arrays, from_dataset):
        assert r.metrics["test"]["accuracy"] == from_file.metrics["test"]["accuracy"]
        assert r.metrics["val"]["log_loss"] == pytest.approx(from_file.metrics["val"]["log_loss"], rel=1e-6)
    run = dnntune.load_run(tmp_path / "run")
    assert run.predict(x[:4]).indices.shape == (4,)
    with pytest.raises(ConfigError, match="data.name: 'iris' names a dataset, but data= was given too"):
        dnntune.train({**common, "data": {"name": "iris"}}, data=(x, y))


def test_own_test_split_is_the_test_split(tmp_path):
    x, y = _blobs(120)
    d = prepare(as_raw({"x": x[:90], "y": y[:90], "x_test": x[90:], "y_test": y[90:]}),
                validate_recipe({"data": {"name": "python"}, "model": {"family": "mlp"}}).data, seed=0)
    assert len(d.test) == 30 and len(d.train) + len(d.val) == 90


def test_tune_own_arrays_with_2_workers_reads_them_back_from_the_study_folder(tmp_path):
    plug = tmp_path / "user"
    plug.mkdir()
    (plug / "tp_api_models.py").write_text(PLUGIN.replace("FAMILY", "tp_api_file_net"))
    dnntune.load_plugins(["tp_api_models"], base_dir=plug)  # as a user's script would import it
    x, y = _blobs(60)
    exp = {k: v for k, v in _experiment([], "tp_api_file_net").items() if k not in ("plugins", "data")}
    summary = dnntune.tune(exp, tmp_path / "run", data=(x, y))
    assert summary["trials"]["complete"] == 2
    assert (tmp_path / "run" / "data.npz").is_file()
    stored = yaml.safe_load((tmp_path / "run" / "best" / "recipe.yaml").read_text())
    assert stored["data"]["name"] == "npz" and stored["plugins"] == ["tp_api_models"]
    with pytest.raises(ConfigError, match="a torch Dataset cannot reach the 2 worker processes"):
        dnntune.tune(exp, tmp_path / "run2", data=PairDataset(x, y))
    with pytest.raises(ConfigError, match="registered in your script"):
        main_like = {**exp, "model": {"family": "tp_api_main_net"}}
        dnntune.register_model("tp_api_main_net")(_main_builder)
        dnntune.tune(main_like, tmp_path / "run3", data=(x, y))


def _main_builder(knobs, spec, num_outputs):
    return nn.Linear(spec.flat_size, num_outputs)


_main_builder.__module__ = "__main__"  # as if defined in the user's script


# --- data.kind ----------------------------------------------------------------------------------


def _images(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x=rng.normal(size=(40, 28, 28)).astype(np.float32), y=np.arange(40) % 2)
    return tmp_path / "img.npz"


def test_a_28x28_array_is_inferred_as_an_image_with_a_note_and_data_kind_overrides_it(tmp_path, capsys):
    import dnntune.data.kinds as kinds

    kinds._said.clear()
    path = str(_images(tmp_path))
    section = lambda **kw: validate_recipe({"data": {"name": "npz", "path": path, **kw},  # noqa: E731
                                            "model": {"family": "mlp"}}).data
    d = load_data(section())
    assert d.kind == "image" and d.input_shape == (1, 28, 28)
    err = capsys.readouterr().err
    assert "taken as image as (N, 1, 28, 28); set data.kind" in err
    d = load_data(section(kind="signal"))
    assert d.kind == "signal" and d.input_shape == (28, 28)
    d = load_data(section(kind="tabular"))
    assert d.kind == "tabular" and d.input_shape == (784,)
    with pytest.raises(ConfigError, match=r"data.kind: sequence needs inputs of shape \(N, L\)"):
        load_data(section(kind="sequence"))
    # the run folder records the converted layout: the model of an inferred image takes (N, 1, 28, 28)
    dnntune.train({"data": {"name": "npz", "path": path}, "model": {"family": "cnn2d", "depth": 1, "channels": 4},
                   "train": {"epochs": 1}}, out_dir=tmp_path / "run")
    run = dnntune.load_run(tmp_path / "run")
    assert run.preprocessing.kind == "image" and run.preprocessing.input_shape == (1, 28, 28)
    assert run.predict(np.load(path)["x"][:3, None]).indices.shape == (3,)


def test_signal_and_integer_inference_and_sequence_kind():
    from dnntune.data.kinds import infer_kind

    assert infer_kind((10, 3, 100)) == "signal" and infer_kind((10, 100, 3)) == "image"
    assert infer_kind((10, 7)) == "tabular" and infer_kind((10, 3, 8, 8)) == "image"
    tokens = np.random.default_rng(0).integers(1, 20, size=(30, 12))
    section = lambda **kw: validate_recipe({"data": {"name": "python", **kw},  # noqa: E731
                                            "model": {"family": "mlp"}}).data
    assert prepare(as_raw((tokens, np.arange(30) % 2)), section(), 0).kind == "tabular"
    d = prepare(as_raw((tokens, np.arange(30) % 2)), section(kind="sequence"), 0)
    assert d.kind == "sequence" and d.train.x.dtype == torch.long and d.mean is None
    # a kind given with the data is kept (not inferred again): (N, 20, 3) declared a signal of 20 channels
    x = np.random.default_rng(0).normal(size=(30, 20, 3))
    assert prepare(as_raw({"x": x, "y": np.arange(30) % 2}), section(), 0).kind == "image"
    d = prepare(as_raw({"x": x, "y": np.arange(30) % 2, "kind": "signal"}), section(), 0)
    assert d.kind == "signal" and d.input_shape == (20, 3)


def test_a_wrong_kind_for_a_family_is_a_clear_error(tmp_path):
    x, y = _blobs()
    with pytest.raises(ConfigError, match="model.family: tp_api_signal_net needs signal input, but python is "
                                          "tabular data of shape 5; families for tabular data: .*mlp"):
        dnntune.train({"model": {"family": "tp_api_signal_net"}, "train": {"epochs": 1}}, data=(x, y))
    r = dnntune.train({"data": {"kind": "signal"}, "model": {"family": "tp_api_signal_net"}, "train": {"epochs": 1}},
                      data=(x, y))
    assert r.epochs == 1
    with pytest.raises(ConfigError, match="model.family: cnn1d needs signal input, but iris is tabular"):
        dnntune.tune({"data": {"name": "iris"}, "model": {"family": {"choice": ["mlp", "cnn1d"]}},
                      "train": {"epochs": 1}, "search": {"n_trials": 1}}, tmp_path / "run")


def test_experiment_file_api_and_a_dataset_plugin(tmp_path):
    (tmp_path / "tp_data_mod.py").write_text(textwrap.dedent('''
        import numpy as np
        from pydantic import BaseModel
        import dnntune

        class K(BaseModel):
            n: int = 60

        @dnntune.register_dataset("tp_blobs", K, task="classification")
        def blobs(knobs):
            """Blobs."""
            rng = np.random.default_rng(0)
            y = np.arange(knobs.n) % 3
            return rng.normal(size=(knobs.n, 4)) + y[:, None], y
    '''))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"plugins": ["tp_data_mod"], "data": {"name": "tp_blobs", "n": 45},
                                                     "model": {"family": "linear"}, "train": {"epochs": 1}}))
    r = dnntune.train(tmp_path / "r.yaml")
    assert r.recipe.plugins == ["tp_data_mod"] and len(r.recipe.data.knobs.model_fields) == 1
    d = load_data(r.recipe.data)
    assert d.kind == "tabular" and d.num_outputs == 3 and len(d.train) + len(d.val) + len(d.test) == 45


def test_the_plugins_example_validates_and_its_dataset_loads():
    from dnntune.config import read_yaml
    from dnntune.plugins import load_plugins
    from dnntune.search import validate_experiment

    folder = Path(__file__).resolve().parents[1] / "examples" / "plugins"
    raw = read_yaml(folder / "experiment.yaml")
    load_plugins(raw["plugins"], base_dir=folder)
    sample = validate_experiment(raw)
    assert sample.model.family == "gated_mlp" and raw["search"]["workers"] == 2
    data = load_data(sample.data, sample.seed)
    assert (data.kind, data.task, data.num_outputs, data.class_names) == ("tabular", "classification", 3,
                                                                          ["arm0", "arm1", "arm2"])
    model = build_model(sample.model, InputSpec(data.kind, data.input_shape), data.num_outputs)
    assert model_parts(model, "gated_mlp").head == ("classifier",)
