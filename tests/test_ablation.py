import csv
import itertools
import json

import pytest
import yaml

from dnntune.ablation import ORDER, AblationSpec, assemble, load_ablation, plan, t_interval
from dnntune.ablation._strategies import _plain
from dnntune.cli import main
from dnntune.config import validate_recipe
from dnntune.errors import ConfigError
from tests.conftest import write_recipe

BASELINE = {"seed": 0, "data": {"name": "iris"}, "model": {"family": "mlp", "width": 16, "depth": 1},
            "optim": {"name": "adam", "lr": 0.01}, "schedule": {"name": "constant"},
            "train": {"epochs": 2, "batch_size": 32}}
BEST = {"seed": 0, "data": {"name": "iris"}, "model": {"family": "mlp", "width": 16, "depth": 1, "dropout": 0.1},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}, "schedule": {"name": "cosine"},
        "train": {"epochs": 2, "batch_size": 32}}


def spec(baseline=BASELINE, best=BEST, seeds=(0, 1)) -> AblationSpec:
    return AblationSpec(validate_recipe(baseline), validate_recipe(best), list(seeds), workers=1,
                        baseline_source="baseline", best_source="best")


def test_every_combination_of_strategies_is_a_valid_recipe():
    # different families and optimizers: knobs must move with their family / optimizer, dropout only where it exists
    base = _plain(validate_recipe({**BASELINE, "model": {"family": "linear"}}), "classification")
    best = _plain(validate_recipe({**BEST, "augment": {"noise": 0.1}, "loss": {"name": "cross_entropy",
                                                                               "label_smoothing": 0.1}}),
                  "classification")
    for k in range(len(ORDER) + 1):
        for subset in itertools.combinations(ORDER, k):
            validate_recipe(assemble(base, best, set(subset), seed=0))
    assert assemble(base, best, set(ORDER), 0) == best
    assert assemble(base, best, set(), 0) == base


def test_views_have_the_right_rows_and_end_at_best_and_baseline():
    cumulative, loo, same = plan(spec())
    changed = ["optimizer", "schedule", "regularization"]
    assert [r.label for r in cumulative] == ["baseline", "+ optimizer", "+ schedule", "+ regularization (= best)"]
    assert [r.label for r in loo] == ["best"] + [f"− {s}" for s in changed]
    assert set(same) == set(ORDER) - set(changed)
    assert cumulative[0].recipe == _plain(validate_recipe(BASELINE), "classification")
    assert cumulative[-1].recipe == loo[0].recipe == _plain(validate_recipe(BEST), "classification")
    assert "optim.name adam → sgd (momentum 0.9)" in cumulative[1].change
    assert loo[3].recipe["model"]["dropout"] == 0.0 and loo[3].recipe["optim"]["weight_decay"] == 0.0


def test_t_interval():
    mean, std, lo, hi, n = t_interval([0.8, 0.9, 1.0])
    assert (round(mean, 6), round(std, 6), n) == (0.9, 0.1, 3)
    assert hi - mean == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-5)


def test_ablate_end_to_end_in_two_worker_processes(tmp_path, capsys):
    base = write_recipe(tmp_path / "baseline.yaml", BASELINE)
    write_recipe(tmp_path / "best.yaml", BEST)
    abl = tmp_path / "abl.yaml"
    abl.write_text(yaml.safe_dump({"baseline": base.name, "best": "best.yaml", "seeds": 2, "workers": 2}))
    code = main(["ablate", str(abl), "--out", str(tmp_path / "out"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    rows = [(r["view"], r["row"]) for r in result["rows"]]
    assert rows == [("cumulative", "baseline"), ("cumulative", "+ optimizer"), ("cumulative", "+ schedule"),
                    ("cumulative", "+ regularization (= best)"), ("leave_one_out", "best"),
                    ("leave_one_out", "− optimizer"), ("leave_one_out", "− schedule"),
                    ("leave_one_out", "− regularization")]
    for r in result["rows"]:
        assert r["seeds"] == 2 and 0 <= r["val_mean"] <= 1 and 0 <= r["test_mean"] <= 1
        assert r["val_ci_low"] <= r["val_mean"] <= r["val_ci_high"]
    # the best recipe is trained once per seed and shared by both views
    assert result["rows"][3]["val_per_seed"] == result["rows"][4]["val_per_seed"]
    for name in ("ablation.md", "ablation.csv", "ablation.png", "ablation.json"):
        assert (tmp_path / "out" / name).exists()
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert "Cumulative" in md and "Leave-one-out" in md and "final evaluation" in md
    assert len(list(csv.DictReader((tmp_path / "out" / "ablation.csv").open()))) == 8


@pytest.mark.parametrize("content, message", [
    ({"best": "missing.yaml"}, "best: missing.yaml: no such file"),
    ({"best": BEST, "baseline": {**BASELINE, "data": {"name": "wine"}}}, "uses wine but best"),
    ({"best": {**BEST, "optim": {"name": "adam", "lr": {"float": [1e-4, 1e-1]}}}}, "optim.lr is a search dimension"),
    ({"best": BEST, "runs": 3}, "runs: unknown key of an ablation file"),
    ({"best": BEST, "seeds": 1}, "seeds: at least 2"),
    ({"best": BEST, "strategies": ["optimizer", "magic"]}, "strategies: 'magic'"),
    ({"baseline": BASELINE}, "best: required"),
    ({"best": BEST, "baseline": BEST}, "nothing to ablate"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, content, message):
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(content))
    code = main(["ablate", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_ablation_file_and_recipe_shorthand(tmp_path, capsys):
    assert main(["ablate", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    recipe = write_recipe(tmp_path / "strong.yaml", BEST)  # a recipe file = best, with the seed articles' baseline
    s = load_ablation(recipe)
    assert s.best_source.endswith("strong.yaml") and s.baseline.model.family == "mlp"
    assert s.baseline.optim.name == "adam" and s.baseline.optim.lr == 1e-3 and s.seeds == [0, 1, 2]
    with pytest.raises(ConfigError, match="recipe.yaml"):
        load_ablation(tmp_path)  # a folder that is not a run folder
