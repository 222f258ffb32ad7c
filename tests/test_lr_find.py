import json
import math

import optuna
import pytest

from dnntune.cli import main
from dnntune.config import validate_recipe
from dnntune.engine.lr_find import lr_find, smoothing_for, suggest
from dnntune.engine.trainer import Trainer
from dnntune.errors import ConfigError
from dnntune.search import tune
from dnntune.search.lr_prior import LR_PRIOR_KEY
from tests.conftest import tiny, write_recipe

optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_range_test_suggests_a_finite_lr_within_the_range_and_writes_png_and_json(tmp_path, monkeypatch):
    def no_eval(*a, **k):
        raise AssertionError("the range test must not evaluate on validation (or test) data")

    monkeypatch.setattr(Trainer, "evaluate", no_eval)
    res = lr_find(validate_recipe(tiny()), min_lr=1e-6, max_lr=1.0, steps=40)
    assert 1e-6 <= res.suggestion <= 1.0 and math.isfinite(res.suggestion)
    assert 2 <= len(res.lrs) == len(res.losses) == len(res.raw_losses) <= 40
    assert res.lrs == sorted(res.lrs) and res.lrs[0] == pytest.approx(1e-6)
    assert all(math.isfinite(v) for v in res.losses)
    assert res.suggestion == pytest.approx(max(res.min_loss_lr / 10, 1e-6))
    paths = res.save(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert set(data) >= {"lrs", "losses", "suggestion", "stopped", "rule"}
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_range_test_stops_when_the_loss_diverges():
    recipe = validate_recipe(tiny(optim={"name": "sgd", "lr": 0.1}))
    res = lr_find(recipe, min_lr=1e-2, max_lr=1e8, steps=60)
    assert res.stopped in ("diverged", "nan") and len(res.lrs) < 60
    assert max(res.losses) <= 4 * min(res.losses) or res.stopped == "diverged"


def test_suggestion_rule_and_smoothing():
    lrs = [10 ** (-6 + i / 4) for i in range(25)]
    losses = [2.0 - 0.05 * i for i in range(16)] + [1.3 + 0.5 * i for i in range(9)]
    s, at_min = suggest(lrs, losses, 1e-6, 10.0)
    assert at_min == lrs[15] and s == pytest.approx(lrs[15] / 10)
    assert suggest(lrs, list(range(25)), 1e-6, 10.0)[0] == 1e-6  # clamped to min_lr
    assert smoothing_for(100) == pytest.approx(0.9) and smoothing_for(10_000) == 0.98


def test_bad_range_is_a_clear_error():
    with pytest.raises(ConfigError, match="min-lr"):
        lr_find(validate_recipe(tiny()), min_lr=1.0, max_lr=0.1)


def test_cli_lr_find(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny())
    code = main(["lr-find", str(recipe), "--out", str(tmp_path / "lf"), "--steps", "30", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0 and (tmp_path / "lf" / "lr_find.png").exists()
    saved = json.loads((tmp_path / "lf" / "lr_find.json").read_text())
    assert float(out.strip()) == pytest.approx(saved["suggestion"], rel=5e-3)  # printed to 3 digits
    assert len(saved["lrs"]) == len(saved["losses"]) >= 2 and saved["lrs"] == sorted(saved["lrs"])
    code = main(["lr-find", str(tmp_path / "missing.yaml")])
    assert code == 2 and "no such file" in capsys.readouterr().err


def _experiment(**optim):
    return {"seed": 0, "data": {"name": "iris"}, "model": {"family": "mlp", "width": 8, "depth": 1},
            "optim": optim, "train": {"epochs": 1, "batch_size": 32},
            "search": {"n_trials": 2, "seed": 0, "pruner": "none", "final": "best_trial", "lr_prior": "range_test"}}


def test_lr_prior_narrows_the_studys_lr_distribution(tmp_path):
    exp = _experiment(name="adam", lr={"float": [1e-6, 1.0], "log": True})
    summary = tune(exp, tmp_path / "run", quiet=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "run" / "study.journal")))
    study = optuna.load_study(study_name="study", storage=storage)
    (test,) = study.user_attrs[LR_PRIOR_KEY]["tests"]
    lo, hi = test["narrowed"]["float"]
    assert test["original"]["float"] == [1e-6, 1.0] and summary["lr_prior"][0]["narrowed"]["float"] == [lo, hi]
    assert lo == pytest.approx(test["suggestion"] / 10, rel=1e-3) and hi == pytest.approx(test["suggestion"] * 3,
                                                                                          rel=1e-3)
    for t in study.trials:
        dist = t.distributions["optim.lr"]
        assert (dist.low, dist.high, dist.log) == (lo, hi, True)


def test_lr_prior_tests_each_optimizer_of_a_choice_and_refuses_a_fixed_lr(tmp_path):
    from dnntune.search.lr_prior import apply_lr_prior

    exp = _experiment(name={"choice": ["adam", "sgd"]}, lr={"float": [1e-5, 1.0], "log": True},
                      sgd={"momentum": 0.9})
    narrowed, record = apply_lr_prior(exp)
    assert [t["param"] for t in record["tests"]] == ["optim.adam.lr", "optim.sgd.lr"]
    assert "lr" not in narrowed["optim"] and narrowed["optim"]["sgd"]["momentum"] == 0.9
    assert narrowed["optim"]["adam"]["lr"]["log"] and narrowed["optim"]["sgd"]["lr"]["log"]
    again, same = apply_lr_prior(exp, previous=record)  # a continued study: no new test
    assert again == narrowed and same is record
    with pytest.raises(ConfigError, match="optim.lr is fixed"):
        apply_lr_prior(_experiment(name="adam", lr=0.01))
