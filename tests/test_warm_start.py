"""search.warm_start: the best recipes of earlier studies run first in a new study, once; invalid ones are
skipped with a message; bad sources are a clear error (exit 2)."""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys

import optuna
import pytest
from conftest import write_recipe
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from dnntune.config import SearchSection
from dnntune.errors import ConfigError
from dnntune.search import storage as st
from dnntune.search.selection import top_trials
from dnntune.search.study import DIRECTIONS_KEY, OBJECTIVES_KEY, Objectives
from dnntune.search.warm_start import WARM_START_ATTR, plan, resolve_source, resolve_sources

SPACE = {
    "seed": 0,
    "data": {"name": "iris"},
    "model": {"family": "mlp", "depth": 1, "width": {"int": [8, 64]}},
    "loss": {"name": "cross_entropy"},
    "optim": {"name": "adamw", "lr": {"float": [0.001, 0.1], "log": True}},
    "schedule": {"name": "constant"},
    "train": {"epochs": 1, "batch_size": 32},
}
OBJ = Objectives(["accuracy"], ["maximize"])
tune_mod = importlib.import_module("dnntune.search.tune")  # the module (dnntune.search.tune is the function)


def experiment(n_trials: int, seed: int = 0, **search) -> dict:
    e = copy.deepcopy(SPACE)
    e["search"] = {"sampler": "random", "pruner": "none", "n_trials": n_trials, "seed": seed, "final": "best_trial",
                   **search}
    return e


def trials_of(run_dir, name: str) -> list:
    study = optuna.load_study(study_name=name, storage=st.open_storage(None, run_dir))
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    """A real tune folder: 3 trials of 1 epoch on iris (no report: not what is tested here)."""
    out = tmp_path_factory.mktemp("source")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tune_mod, "_write_report", lambda *a, **k: None)
        tune_mod.tune(experiment(3), out, study_name="src", quiet=True)
    return out


def test_warm_start_trials_run_first_in_the_source_order_once(source_dir, tmp_path, monkeypatch, capsys):
    from dnntune.report import build_report

    monkeypatch.setattr(tune_mod, "_write_report", lambda *a, **k: None)
    src = [t for t in trials_of(source_dir, "src") if t.state == TrialState.COMPLETE]
    top = top_trials(src, ["maximize"], k=2)
    target = experiment(4, seed=1, warm_start=[str(source_dir)], warm_start_top_k=2)
    target["model"]["dropout"] = {"float": [0.0, 0.5]}  # a dimension the source lacks: left to the sampler
    out = tmp_path / "target"
    tune_mod.tune(target, out, study_name="tgt", quiet=True)
    trials = trials_of(out, "tgt")
    assert len(trials) == 4  # the warm-start trials are part of the budget
    for t, s in zip(trials[:2], top):
        assert t.user_attrs[WARM_START_ATTR] == f"{source_dir}#{s.number}"
        assert {k: t.params[k] for k in s.params} == s.params
        assert 0.0 <= t.params["model.dropout"] <= 0.5
    assert all(WARM_START_ATTR not in t.user_attrs for t in trials[2:])

    # continued (a larger budget, the same file): nothing is enqueued again
    tune_mod.tune(experiment(6, seed=1, warm_start=[str(source_dir)], warm_start_top_k=2) | {"model": target["model"]},
                  out, study_name="tgt", quiet=True)
    trials = trials_of(out, "tgt")
    assert len(trials) == 6 and sum(WARM_START_ATTR in t.user_attrs for t in trials) == 2

    study = optuna.load_study(study_name="tgt", storage=st.open_storage(None, out))
    html = build_report(study, tmp_path / "report", out).path.read_text()
    assert "(warm start)" in html and f"2 warm-start trials from {source_dir}" in html


def _source_study(path, direction: str = "maximize", trials=()) -> str:
    """A journal study with the given (params, value) trials, as dnntune stores its objectives."""
    storage = st.open_storage(str(path))
    study = optuna.create_study(storage=storage, study_name="made", direction=direction)
    study.set_user_attr(OBJECTIVES_KEY, ["accuracy"])
    study.set_user_attr(DIRECTIONS_KEY, [direction])
    dists = {"model.width": IntDistribution(1, 512), "optim.lr": FloatDistribution(1e-5, 1.0, log=True),
             "model.family": CategoricalDistribution(["mlp", "linear"])}
    for params, value in trials:
        study.add_trial(create_trial(params=params, distributions={k: dists[k] for k in params}, value=value))
    return f"{path}#made"


def test_recipes_outside_the_new_space_are_skipped_with_a_message(tmp_path, capsys):
    source = _source_study(tmp_path / "s.journal", trials=[
        ({"model.width": 48, "optim.lr": 0.01}, 0.95),                         # width outside [8, 32]
        ({"model.width": 16, "optim.lr": 0.01}, 0.90),
        ({"model.width": 16, "optim.lr": 0.01}, 0.85),                         # the same recipe again
        ({"model.family": "linear", "optim.lr": 0.02}, 0.80),                  # the new experiment fixes mlp
        ({"model.width": 24, "optim.lr": 0.5}, 0.75),                          # lr outside [0.001, 0.1]
        ({"model.width": 12, "optim.lr": 0.003}, 0.70),
        ({"model.width": 10, "optim.lr": 0.003}, 0.10),                        # not in the top 6
    ])
    target = experiment(10, warm_start=[source], warm_start_top_k=6)
    target["model"]["width"] = {"int": [8, 32]}
    got = plan(target, SearchSection(**target["search"]), OBJ)
    assert got == [({"model.width": 16, "optim.lr": 0.01}, f"{source}#1"),
                   ({"model.width": 12, "optim.lr": 0.003}, f"{source}#5")]
    err = capsys.readouterr().err
    assert f"skipped trial {source}#0: model.width = 48 is outside the new space (int [8, 32])" in err
    assert f"skipped trial {source}#2: the same parameters" in err
    assert f"skipped trial {source}#3: model.family = 'linear', but the new experiment fixes 'mlp'" in err
    assert f"skipped trial {source}#4: optim.lr = 0.5 is outside the new space (float [0.001, 0.1], log)" in err
    assert "#6" not in err


def test_an_empty_or_opposite_direction_source_warns(tmp_path, capsys):
    empty = _source_study(tmp_path / "e.journal")
    other = _source_study(tmp_path / "o.journal", "minimize", [({"model.width": 9, "optim.lr": 0.01}, 0.3),
                                                               ({"model.width": 20, "optim.lr": 0.01}, 0.1)])
    target = experiment(10, warm_start=[empty, other], warm_start_top_k=1)
    assert plan(target, SearchSection(**target["search"]), OBJ) == [({"model.width": 20, "optim.lr": 0.01},
                                                                      f"{other}#1")]  # its own best: the lowest
    err = capsys.readouterr().err
    assert "has no complete trial" in err and "ranked by its own objective accuracy (minimize)" in err


def test_a_folder_without_a_study_a_nameless_entry_or_a_grid_sampler_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"search.warm_start\[0\]: .*not a `dnntune tune` folder"):
        resolve_source(str(tmp_path), 0)
    with pytest.raises(ConfigError, match="needs both a storage and a study name"):
        resolve_source(f"{tmp_path}#", 0)
    with pytest.raises(ConfigError, match="search.warm_start: not with search.sampler: grid"):
        resolve_sources(SearchSection(sampler="grid", warm_start=[str(tmp_path)]))


@pytest.mark.parametrize("source, message", [
    ("{tmp}/nowhere", "search.warm_start[0]: {tmp}/nowhere: no such tune folder or journal file"),
    ("{src}/study.journal#nope", "search.warm_start[0]: no study named 'nope' in {src}/study.journal; "
                                 "studies there: src"),
])
def test_a_bad_source_exits_2_naming_what_is_wrong(source_dir, tmp_path, source, message):
    fmt = {"tmp": tmp_path, "src": source_dir}
    path = write_recipe(tmp_path / "exp.yaml", experiment(2, warm_start=[source.format(**fmt)]))
    res = subprocess.run([sys.executable, "-m", "dnntune", "tune", str(path), "--out", str(tmp_path / "run"),
                          "--quiet"], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert message.format(**fmt) in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "study.journal").exists()  # no study was made before the source was checked
