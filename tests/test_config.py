from pathlib import Path

import pytest

from dnntune.config import apply_overrides, find_dimensions, load_recipe, validate_recipe
from dnntune.errors import ConfigError
from tests.conftest import tiny, write_recipe


def test_minimal_recipe_gets_defaults():
    r = validate_recipe({"data": {"name": "iris"}, "model": {"family": "mlp"}})
    assert r.optim.name == "adamw" and r.schedule.name == "constant" and r.loss.name == "auto"
    assert r.model.knobs.width == 256
    assert r.data.val_fraction == 0.1 and r.data.test_fraction == 0.2


def test_round_trip_through_yaml(tmp_path):
    r = validate_recipe(tiny(schedule={"name": "cosine", "warmup_epochs": 1, "min_factor": 0.1}))
    path = tmp_path / "r.yaml"
    path.write_text(r.to_yaml())
    assert load_recipe(path) == r


@pytest.mark.parametrize("raw, field, allowed", [
    (tiny(optim={"name": "adam", "lr": 0.1, "momentun": 0.9}), "optim.momentun", "beta1"),
    (tiny(model={"family": "mlp", "widht": 3}), "model.widht", "width"),
    (tiny(train={"epochs": 3, "bogus": 1}), "train.bogus", "batch_size"),
    (tiny(train={"early_stopping": {"patiense": 3}}), "train.early_stopping.patiense", "patience"),
    ({**tiny(), "extra": 1}, "extra", "augment"),
])
def test_unknown_keys_name_the_field_and_list_allowed(raw, field, allowed):
    with pytest.raises(ConfigError) as e:
        validate_recipe(raw)
    assert f"{field}: unknown" in str(e.value) and allowed in str(e.value)


@pytest.mark.parametrize("section, key, name", [
    ("data", "name", "mnist2d"), ("model", "family", "vgg"), ("optim", "name", "adamx"),
    ("schedule", "name", "warm"), ("loss", "name", "hinge"),
])
def test_unknown_names_list_valid_ones(section, key, name):
    raw = tiny()
    raw[section] = {**raw.get(section, {}), key: name}
    with pytest.raises(ConfigError) as e:
        validate_recipe(raw)
    msg = str(e.value)
    assert f"{section}.{key}" in msg and repr(name) in msg and "allowed:" in msg


@pytest.mark.parametrize("patch, field", [
    ({"optim": {"name": "adam", "lr": -1}}, "optim.lr"),
    ({"train": {"epochs": "many"}}, "train.epochs"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"model": {"family": "mlp", "dropout": 1.5}}, "model.dropout"),
    ({"data": {"name": "iris", "val_fraction": 1.0}}, "data.val_fraction"),
    ({"train": {"device": "gpu7"}}, "train.device"),
    ({"optim": {"name": "sgd", "nesterov": True}}, "optim"),
    ({"seed": -3}, "seed"),
    ({"train": {"batch_growth": {"factor": 2}}}, "train.batch_growth"),  # no trigger: it would never grow
])
def test_wrong_types_and_ranges(patch, field):
    with pytest.raises(ConfigError) as e:
        validate_recipe(tiny(**patch))
    assert str(e.value).startswith(field)


def test_search_dimension_is_refused_by_train():
    with pytest.raises(ConfigError, match=r"optim.lr: is a search dimension"):
        validate_recipe(tiny(optim={"name": "adam", "lr": {"float": [1e-4, 1e-1], "log": True}}))


def test_find_dimensions_and_overrides():
    raw = {"optim": {"lr": {"float": [0.1, 1]}}, "model": {"family": {"choice": ["mlp", "cnn1d"]}}}
    assert sorted(find_dimensions(raw)) == ["model.family", "optim.lr"]
    out = apply_overrides(tiny(), ["optim.lr=0.5", "train.early_stopping.patience=4", "model.norm=batch"])
    assert out["optim"]["lr"] == 0.5 and out["train"]["early_stopping"]["patience"] == 4
    assert validate_recipe(out).model.knobs.norm == "batch"
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides({}, ["optim.lr"])


def test_conditional_knobs_for_the_chosen_option():
    r = validate_recipe(tiny(model={"family": "mlp", "mlp": {"width": 8}, "cnn1d": {"channels": 4}}))
    assert r.model.knobs.width == 8


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("data: {name: iris\nmodel: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML \(line"):
        load_recipe(p)
    with pytest.raises(ConfigError, match="no such file"):
        load_recipe(tmp_path / "missing.yaml")


def test_cli_seed_overrides_file(tmp_path):
    p = write_recipe(tmp_path / "r.yaml", tiny())
    assert load_recipe(p, seed=7).seed == 7


EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_file_validates(path):
    from dnntune.config import read_yaml
    from dnntune.search import complete_experiment, validate_experiment

    raw = read_yaml(path)
    if "search" in raw or find_dimensions(raw):  # a tune experiment
        validate_experiment(complete_experiment(raw))
    else:
        validate_recipe(raw)


@pytest.mark.parametrize("name", ["mnist1d", "mnist1d-cnn"])
def test_packaged_presets_are_the_example_files(name):
    from importlib import resources

    shipped = resources.files("dnntune.presets").joinpath(f"{name}.yaml").read_text()
    assert shipped == (EXAMPLES[0].parent / f"{name}.yaml").read_text()


# --- conditional knobs: one resolution for recipes and search spaces (issue 8, defects 6) -------------

SGD_BLOCK = {"name": "sgd", "lr": 0.1, "sgd": {"lr": 0.01, "momentum": 0.9}, "adam": {"beta1": 0.8}}


def test_the_chosen_options_block_may_set_the_sections_fields():
    r = validate_recipe(tiny(optim=SGD_BLOCK))
    assert r.optim.name == "sgd" and r.optim.lr == 0.01  # the option's own value wins over the section's
    assert r.optim.knobs.momentum == 0.9


def test_a_search_space_resolves_conditional_knobs_as_a_recipe_does():
    import optuna

    from dnntune.search.space import suggest_recipe

    exp = tiny(optim={**SGD_BLOCK, "name": {"choice": ["sgd", "adam"]}})
    for name in ("sgd", "adam"):
        raw = suggest_recipe(optuna.trial.FixedTrial({"optim.name": name}), exp)
        assert validate_recipe(raw) == validate_recipe(tiny(optim={**SGD_BLOCK, "name": name}))
    adam = validate_recipe(suggest_recipe(optuna.trial.FixedTrial({"optim.name": "adam"}), exp))
    assert adam.optim.lr == 0.1 and adam.optim.knobs.beta1 == 0.8


def test_an_unknown_key_in_the_chosen_options_block_is_named():
    with pytest.raises(ConfigError) as e:
        validate_recipe(tiny(optim={"name": "sgd", "sgd": {"lr": 0.01, "momentun": 0.9}}))
    msg = str(e.value)
    assert msg.startswith("optim.sgd.momentun: unknown key; allowed:") and "momentum" in msg and "lr" in msg
    with pytest.raises(ConfigError, match="optim.sgd.lr: Input should be greater than 0"):
        validate_recipe(tiny(optim={"name": "sgd", "sgd": {"lr": -1}}))
    with pytest.raises(ConfigError, match="optim.sgd.name: "):
        validate_recipe(tiny(optim={"name": "sgd", "sgd": {"name": "adam"}}))
