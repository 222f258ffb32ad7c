"""``dnntune ablate``: what each strategy bought, measured over seeds.

**Input.** An *ablation file* (YAML)::

    best: runs/digits/best/recipe.yaml   # required: a recipe file, a run folder (`dnntune tune`'s, whose
                                         # best/recipe.yaml is used, or `dnntune train`'s) or an inline recipe
    baseline: digits-baseline.yaml       # same forms; default: the seed articles' baseline on best's data
    seeds: 3                             # seeds 0..N-1, or a list [0, 1, 2]; at least 2 (3+ recommended)
    workers: 2                           # training processes in parallel
    metric: accuracy                     # default: the task's (accuracy, or mse for regression)
    strategies: [architecture, ...]      # order of the cumulative view (default: dnntune.ablation.ORDER)
    set: [train.epochs=20]               # overrides applied to both recipes, as --set

Paths are relative to the ablation file's folder (or the working directory). ``dnntune ablate RECIPE.yaml``
(a file of recipe sections) and ``dnntune ablate RUN_DIR`` are short for ``best: ...`` with the default
baseline: the seed articles' MLP (1 hidden layer of 256, ReLU), Adam at lr 1e-3, constant schedule, batch 64,
10 epochs, no regularization, no augmentation, no early stopping or best-epoch restore.

**Strategies** are groups of recipe fields, each group switched whole between the baseline's and the best's
values (``STRATEGIES``). Every combination yields a valid recipe: optimizer knobs move with the optimizer name,
architecture knobs with the family, and dropout (a model knob, but regularization) is kept only where the
chosen family has it (0 = off where the source recipe has none). The data section is the best's for every
row (the dataset and its knobs must match); device and evaluation settings are the best's too.

**Two views**, every row trained with each seed (the seed draws the validation split and the
initialization, so rows are paired by seed): *cumulative* starts from the baseline and switches one more
strategy to the best's setting per row (its last row is the best recipe); *leave-one-out* starts from the best
and reverts one strategy at a time to the baseline's setting. Strategies the two recipes share are skipped.
*Bought* is the paired difference over seeds: row − previous row (cumulative), best − row (leave-one-out),
sign-flipped for metrics to minimize, so positive means the strategy helped.

**Honest evaluation.** Validation numbers are the ones to make choices with (what to keep, what to try next);
test numbers are the final evaluation of each row's recipe, reported beside them and never used to choose
anything here. Validation numbers of a best recipe that was tuned on the same splits are optimistic.
Mean ± std and the 95% confidence interval of the mean (Student t, n − 1 degrees of freedom) are over seeds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import SECTIONS, Recipe, apply_overrides, find_dimensions, read_yaml, validate_recipe
from ..errors import ConfigError
from ._strategies import ORDER, STRATEGIES

FILE_KEYS = ("baseline", "best", "seeds", "workers", "metric", "strategies", "set")


@dataclass
class AblationSpec:
    """A validated ablation: two concrete recipes on the same data and how to compare them."""

    baseline: Recipe
    best: Recipe
    seeds: list[int]
    workers: int = 2
    metric: str | None = None
    strategies: list[str] = field(default_factory=lambda: list(ORDER))
    baseline_source: str = "the seed articles' baseline"
    best_source: str = "best"


def seed_baseline(best: dict) -> dict:
    """The seed articles' baseline recipe on the data of ``best`` (plain data, as a recipe file)."""
    return {"seed": best.get("seed", 0), "data": copy.deepcopy(best["data"]),
            "model": {"family": "mlp", "depth": 1, "width": 256, "activation": "relu", "norm": "none",
                      "dropout": 0.0},
            "loss": {"name": "auto"}, "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
            "schedule": {"name": "constant"},
            "train": {"epochs": 10, "batch_size": 64, "early_stopping": {"restore_best": False}}}


def _resolve_path(value: str, base: Path | None, what: str) -> Path:
    tried = []
    for root in ([base] if base is not None else []) + [Path.cwd()]:
        p = (root / value) if not Path(value).is_absolute() else Path(value)
        tried.append(str(p))
        if p.exists():
            return p
    raise ConfigError(f"{what}: {value}: no such file or run folder (looked at {', '.join(dict.fromkeys(tried))})")


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _recipe_file(path: Path, what: str) -> Path:
    if path.is_file():
        return path
    for candidate in (path / "best" / "recipe.yaml", path / "recipe.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{what}: {path} is a folder without best/recipe.yaml (a `dnntune tune` run) or "
                      f"recipe.yaml (a `dnntune train` run)")


def _raw_recipe(value: Any, base: Path | None, what: str) -> tuple[dict, str]:
    if isinstance(value, dict):
        return copy.deepcopy(value), f"{what} (inline)"
    if isinstance(value, (str, Path)):
        path = _recipe_file(_resolve_path(str(value), base, what), what)
        return read_yaml(path), _display(path)
    raise ConfigError(f"{what}: expected a recipe file, a run folder or an inline recipe, got {value!r}")


def _validate(raw: dict, source: str, overrides: list[str]) -> Recipe:
    raw = apply_overrides(raw, overrides)
    raw.pop("search", None)
    dims = find_dimensions(raw)
    if dims:
        raise ConfigError(f"{source}: {dims[0]} is a search dimension; ablate compares concrete recipes "
                          f"(e.g. a tune run's best/recipe.yaml, or `dnntune best`)")
    return validate_recipe(raw, source)


def _task(recipe: Recipe) -> str:
    from ..data import DATASETS, load_data

    task = DATASETS.get(recipe.data.name, "data.name").meta.get("task")
    if task in (None, "any"):
        task = load_data(recipe.data, recipe.seed).task
    return task


def _read_file(p: Path, path: str | Path) -> dict[str, Any]:
    """The ablation file's keys; a run folder or a file of recipe sections is short for ``best: ...``."""
    if p.is_dir():
        return {"best": str(p.resolve())}
    raw = read_yaml(p)
    if "best" in raw or "baseline" in raw:
        unknown = [k for k in raw if k not in FILE_KEYS]
        if unknown:
            raise ConfigError(f"{path}: {unknown[0]}: unknown key of an ablation file; allowed: "
                              f"{', '.join(FILE_KEYS)}")
        if "best" not in raw:
            raise ConfigError(f"{path}: best: required (a recipe file, a run folder or an inline recipe)")
        return raw
    if raw and set(raw) <= set(SECTIONS):
        return {"best": str(p.resolve())}
    bad = next((k for k in raw if k not in SECTIONS), None)
    raise ConfigError(f"{path}: expected an ablation file ({', '.join(FILE_KEYS)}) or a recipe "
                      f"({', '.join(SECTIONS)})" + (f"; unknown key {bad!r}" if bad else ""))


def _overrides(spec: dict[str, Any], path: str | Path, overrides: list[str] | None) -> list[str]:
    """The file's ``set`` followed by the command line's overrides."""
    file_set = spec.get("set") or []
    if isinstance(file_set, str):
        file_set = [file_set]
    if not isinstance(file_set, list) or not all(isinstance(s, str) for s in file_set):
        raise ConfigError(f"{path}: set: expected a list of section.key=value strings")
    return list(file_set) + list(overrides or [])


def _recipes(spec: dict[str, Any], base: Path, baseline: str | None,
             sets: list[str]) -> tuple[Recipe, str, Recipe, str]:
    """(best, its source, baseline, its source), validated and checked to use the same data."""
    best_raw, best_src = _raw_recipe(spec["best"], base, "best")
    if baseline is not None:
        base_raw, base_src = _raw_recipe(baseline, None, "--baseline")
    elif spec.get("baseline") is not None:
        base_raw, base_src = _raw_recipe(spec["baseline"], base, "baseline")
    else:
        if not isinstance(best_raw.get("data"), dict):
            raise ConfigError(f"{best_src}: data: required section")
        base_raw, base_src = seed_baseline(best_raw), "the seed articles' baseline"
    best = _validate(best_raw, best_src, sets)
    base_recipe = _validate(base_raw, base_src, sets)
    if (base_recipe.data.name, base_recipe.data.knobs) != (best.data.name, best.data.knobs):
        what = (f"{base_recipe.data.name}" if base_recipe.data.name != best.data.name
                else f"{best.data.name} with other data knobs")
        raise ConfigError(f"baseline ({base_src}) uses {what} but best ({best_src}) uses {best.data.name}"
                          f"{'' if base_recipe.data.name != best.data.name else ' with its own knobs'}; "
                          f"an ablation compares recipes on the same data")
    return best, best_src, base_recipe, base_src


def _seeds(seeds: Any) -> list[int]:
    """A count or a list of seeds as distinct seeds in their order; at least 2."""
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list)):
        raise ConfigError(f"seeds: expected a count or a list of seeds, got {seeds!r}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else seeds
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seed_list):
        raise ConfigError(f"seeds: seeds are non-negative integers, got {seeds!r}")
    if len(set(seed_list)) < 2:
        raise ConfigError(f"seeds: at least 2 distinct seeds are needed for a spread (3+ recommended), got {seeds!r}")
    return sorted(set(seed_list), key=seed_list.index)


def _workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected a positive integer, got {workers!r}")
    return workers


def _order(order: Any) -> list[str]:
    """The cumulative view's order: the given strategies first, then the rest in :data:`ORDER`."""
    if not isinstance(order, list) or any(s not in STRATEGIES for s in order) or len(set(order)) != len(order):
        bad = next((s for s in order if s not in STRATEGIES), order) if isinstance(order, list) else order
        raise ConfigError(f"strategies: {bad!r} is not a list of distinct strategies; allowed: {', '.join(ORDER)}")
    return list(order) + [s for s in ORDER if s not in order]


def load_ablation(path: str | Path, overrides: list[str] | None = None, seeds: int | list[int] | None = None,
                  workers: int | None = None, baseline: str | None = None) -> AblationSpec:
    """Read an ablation file (or a recipe file / run folder as ``best``) into a checked :class:`AblationSpec`.

    Command-line values (``seeds``, ``workers``, ``baseline``, ``overrides``) take precedence over the file's.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: no such file or run folder")
    spec = _read_file(p, path)
    sets = _overrides(spec, path, overrides)
    best, best_src, base_recipe, base_src = _recipes(spec, p.parent, baseline, sets)
    seed_list = _seeds(spec.get("seeds", 3) if seeds is None else seeds)
    workers = _workers(spec.get("workers", 2) if workers is None else workers)
    order = _order(spec.get("strategies") or [])
    metric = spec.get("metric")
    if metric is not None:
        from ..engine.metrics import direction

        direction(metric, _task(best))  # a clear error for an unknown metric
    return AblationSpec(baseline=base_recipe, best=best, seeds=seed_list, workers=workers, metric=metric,
                        strategies=order, baseline_source=base_src, best_source=best_src)
