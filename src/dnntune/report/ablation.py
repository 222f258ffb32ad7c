"""``dnntune ablate``: what each strategy bought, measured over seeds.

**Input.** An *ablation file* (YAML)::

    best: runs/digits/best/recipe.yaml   # required: a recipe file, a run folder (`dnntune tune`'s, whose
                                         # best/recipe.yaml is used, or `dnntune train`'s) or an inline recipe
    baseline: digits-baseline.yaml       # same forms; default: the seed articles' baseline on best's data
    seeds: 3                             # seeds 0..N-1, or a list [0, 1, 2]; at least 2 (3+ recommended)
    workers: 2                           # training processes in parallel
    metric: accuracy                     # default: the task's (accuracy, or mse for regression)
    strategies: [architecture, ...]      # order of the cumulative view (default: ORDER below)
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
import csv
import io
import json
import math
import re
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import SECTIONS, Recipe, apply_overrides, find_dimensions, read_yaml, validate_recipe
from ..errors import ConfigError

STRATEGIES = {
    "architecture": "model family and size (model.*, except dropout)",
    "optimizer": "optimizer, its learning rate and knobs, gradient clipping (optim.name/lr/knobs, train.grad_clip)",
    "schedule": "learning-rate schedule and warmup (schedule.*)",
    "batch_size": "batch size, fixed or growing (train.batch_size, train.batch_growth)",
    "loss": "loss function and label smoothing (loss.*)",
    "regularization": "weight decay, L1, dropout (optim.weight_decay/decay_norm_and_bias, train.l1, model dropout)",
    "augmentation": "data augmentation (augment.*)",
    "training_length": "epochs and early stopping (train.epochs, train.early_stopping)",
}
ORDER = list(STRATEGIES)
FILE_KEYS = ("baseline", "best", "seeds", "workers", "metric", "strategies", "set")
PERCENT_METRICS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro")


# --- the recipes ----------------------------------------------------------------------------------


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


def load_ablation(path: str | Path, overrides: list[str] | None = None, seeds: int | list[int] | None = None,
                  workers: int | None = None, baseline: str | None = None) -> AblationSpec:
    """Read an ablation file (or a recipe file / run folder as ``best``) into a checked :class:`AblationSpec`.

    Command-line values (``seeds``, ``workers``, ``baseline``, ``overrides``) take precedence over the file's.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: no such file or run folder")
    spec: dict[str, Any]
    base = p.parent
    if p.is_dir():
        spec = {"best": str(p.resolve())}
    else:
        raw = read_yaml(p)
        if "best" in raw or "baseline" in raw:
            unknown = [k for k in raw if k not in FILE_KEYS]
            if unknown:
                raise ConfigError(f"{path}: {unknown[0]}: unknown key of an ablation file; allowed: "
                                  f"{', '.join(FILE_KEYS)}")
            if "best" not in raw:
                raise ConfigError(f"{path}: best: required (a recipe file, a run folder or an inline recipe)")
            spec = raw
        elif raw and set(raw) <= set(SECTIONS):
            spec = {"best": str(p.resolve())}
        else:
            bad = next((k for k in raw if k not in SECTIONS), None)
            raise ConfigError(f"{path}: expected an ablation file ({', '.join(FILE_KEYS)}) or a recipe "
                              f"({', '.join(SECTIONS)})" + (f"; unknown key {bad!r}" if bad else ""))
    file_set = spec.get("set") or []
    if isinstance(file_set, str):
        file_set = [file_set]
    if not isinstance(file_set, list) or not all(isinstance(s, str) for s in file_set):
        raise ConfigError(f"{path}: set: expected a list of section.key=value strings")
    sets = list(file_set) + list(overrides or [])
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
    seeds = spec.get("seeds", 3) if seeds is None else seeds
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list)):
        raise ConfigError(f"seeds: expected a count or a list of seeds, got {seeds!r}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else seeds
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seed_list):
        raise ConfigError(f"seeds: seeds are non-negative integers, got {seeds!r}")
    if len(set(seed_list)) < 2:
        raise ConfigError(f"seeds: at least 2 distinct seeds are needed for a spread (3+ recommended), got {seeds!r}")
    workers = spec.get("workers", 2) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected a positive integer, got {workers!r}")
    order = spec.get("strategies") or []
    if not isinstance(order, list) or any(s not in STRATEGIES for s in order) or len(set(order)) != len(order):
        bad = next((s for s in order if s not in STRATEGIES), order) if isinstance(order, list) else order
        raise ConfigError(f"strategies: {bad!r} is not a list of distinct strategies; allowed: {', '.join(ORDER)}")
    order = list(order) + [s for s in ORDER if s not in order]
    metric = spec.get("metric")
    if metric is not None:
        from ..engine.metrics import direction

        direction(metric, _task(best))  # a clear error for an unknown metric
    return AblationSpec(baseline=base_recipe, best=best, seeds=sorted(set(seed_list), key=seed_list.index),
                        workers=workers, metric=metric, strategies=order, baseline_source=base_src,
                        best_source=best_src)


# --- strategies as groups of fields ---------------------------------------------------------------

Fields = dict[tuple[str, str], Any]


def strategy_of(section: str, key: str) -> str | None:
    """The strategy a recipe field belongs to; None for fields fixed to the best's value (data, device...)."""
    if section == "model":
        return "regularization" if "dropout" in key else "architecture"
    if section == "optim":
        return "regularization" if key in ("weight_decay", "decay_norm_and_bias") else "optimizer"
    if section == "train":
        return {"batch_size": "batch_size", "batch_growth": "batch_size", "epochs": "training_length",
                "early_stopping": "training_length", "l1": "regularization", "grad_clip": "optimizer"}.get(key)
    return {"loss": "loss", "schedule": "schedule", "augment": "augmentation"}.get(section)


def _plain(recipe: Recipe, task: str) -> dict:
    d = recipe.to_dict()
    d.pop("search", None)
    if d["loss"]["name"] == "auto":  # what auto means, so that `auto` and its meaning compare equal
        d["loss"] = {"name": "cross_entropy" if task == "classification" else "mse"}
        if task == "classification":
            d["loss"]["label_smoothing"] = 0.0
    return d


def split(d: dict) -> dict[str | None, Fields]:
    """A recipe (``Recipe.to_dict()``) cut into its strategies' fields; key None: the fixed fields."""
    parts: dict[str | None, Fields] = {s: {} for s in ORDER}
    parts[None] = {}
    for section in ("model", "loss", "optim", "schedule", "train", "augment"):
        for key, value in d[section].items():
            parts[strategy_of(section, key)][(section, key)] = value
    return parts


def assemble(baseline: dict, best: dict, from_best: set[str], seed: int) -> dict:
    """The recipe (plain data) with the strategies in ``from_best`` set as in ``best``, the rest as in
    ``baseline``; data and fixed fields from ``best``."""
    from ..models import MODELS

    pa, pb = split(baseline), split(best)
    raw: dict[str, Any] = {"seed": seed, "data": copy.deepcopy(best["data"])}
    for fields in [pb[None]] + [(pb if s in from_best else pa)[s] for s in ORDER]:
        for (section, key), value in fields.items():
            raw.setdefault(section, {})[key] = copy.deepcopy(value)
    # dropout is regularization but a knob of the family: keep it only where the family has it
    model = raw["model"]
    knobs = MODELS.get(model["family"], "model.family").knobs.model_fields
    for key in [k for k in model if "dropout" in k and k not in knobs]:
        del model[key]
    for key in [k for k in knobs if "dropout" in k and k not in model]:
        model[key] = 0.0
    return raw


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flat(v, path))
        else:
            out[path] = v
    return out


def describe_change(before: dict, after: dict) -> str:
    """``path a → b`` for every field that differs between two recipes (plain data). Where a family or
    name changes, its knobs are listed once, as the new entry's non-default values."""
    from ..config import NAMED, _registries

    regs = _registries()
    a, b = _flat(before), _flat(after)
    renamed: dict[str, str] = {}
    parts = []
    for section, (cls, key, reg) in NAMED.items():
        if section in before and section in after and before[section].get(key) != after[section].get(key):
            entry = regs[reg].get(after[section][key])
            knobs = [f"{k} {_short(after[section][k])}" for k, info in entry.knobs.model_fields.items()
                     if k in after[section] and after[section][k] != info.default]
            parts.append(f"{section}.{key} {before[section][key]} → {after[section][key]}"
                         + (f" ({', '.join(knobs)})" if knobs else ""))
            renamed[section] = key
            common = set(cls.model_fields) - {"knobs"}
            for path in [p for p in dict.fromkeys(list(a) + list(b)) if p.split(".")[0] == section]:
                if path.split(".")[1] not in common:
                    a.pop(path, None)
                    b.pop(path, None)
    for path in dict.fromkeys(list(a) + list(b)):
        if path == "seed" or a.get(path, "–") == b.get(path, "–"):
            continue
        if renamed.get(path.split(".")[0]) == path.split(".", 1)[1]:
            continue
        parts.append(f"{path} {_short(a.get(path, '–'))} → {_short(b.get(path, '–'))}")
    return ", ".join(parts)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


@dataclass
class Row:
    """One row of a view: a recipe and its per-seed validation and test values."""

    view: str  # "cumulative" or "leave_one_out"
    label: str
    strategy: str | None
    change: str
    recipe: dict
    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def plan(spec: AblationSpec) -> tuple[list[Row], list[Row], list[str]]:
    """The rows of both views (without numbers) and the strategies the two recipes share."""
    task = _task(spec.best)
    base, best = _plain(spec.baseline, task), _plain(spec.best, task)
    seed = spec.seeds[0]
    everything = set(ORDER)

    def key(d):
        return json.dumps({k: v for k, v in d.items() if k != "seed"}, sort_keys=True)

    full = assemble(base, best, everything, seed)
    changed = [s for s in spec.strategies if key(assemble(base, best, everything - {s}, seed)) != key(full)]
    same = [s for s in spec.strategies if s not in changed]
    if not changed:
        raise ConfigError(f"baseline ({spec.baseline_source}) and best ({spec.best_source}) are the same recipe "
                          f"(outside data and device settings): nothing to ablate")
    cumulative = [Row("cumulative", "baseline", None, spec.baseline_source, assemble(base, best, set(), seed))]
    applied: set[str] = set()
    for s in changed:
        before = assemble(base, best, set(applied), seed)
        applied.add(s)
        after = assemble(base, best, set(applied), seed)
        cumulative.append(Row("cumulative", f"+ {s}", s, describe_change(before, after), after))
    cumulative[-1].label += " (= best)"
    loo = [Row("leave_one_out", "best", None, spec.best_source, full)]
    for s in changed:
        reverted = assemble(base, best, everything - {s}, seed)
        loo.append(Row("leave_one_out", f"− {s}", s, describe_change(full, reverted), reverted))
    for row in cumulative + loo:
        validate_recipe(row.recipe, f"ablation row {row.view} {row.label!r}")
    return cumulative, loo, same


# --- running ----------------------------------------------------------------------------------------


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_job(recipe: dict, seed: int, metric: str) -> dict:
    """Train one row's recipe with one seed through the one training path; val and test values."""
    from ..engine.trainer import train
    from ..errors import TrainingDiverged

    raw = copy.deepcopy(recipe)
    raw["seed"] = seed
    raw["train"] = {**raw["train"], "checkpoint": False, "threads": 1}
    r = validate_recipe(raw, "ablation row")
    t0 = time.perf_counter()
    try:
        res = train(r)
    except TrainingDiverged as e:
        return {"val": math.nan, "test": math.nan, "epochs": e.epoch, "seconds": time.perf_counter() - t0,
                "failure": f"diverged at epoch {e.epoch}"}
    return {"val": res.metrics["val"][metric], "test": res.metrics["test"][metric], "epochs": res.epochs,
            "seconds": time.perf_counter() - t0, "failure": None}


def _run_all(jobs: list[tuple[str, dict, int]], metric: str, workers: int,
             on_done: Callable[[int, int], None] | None) -> dict[tuple[str, int], dict]:
    results: dict[tuple[str, int], dict] = {}
    if workers == 1 or len(jobs) == 1:
        import torch

        threads = torch.get_num_threads()
        try:
            for i, (key, recipe, seed) in enumerate(jobs):
                results[(key, seed)] = run_job(recipe, seed, metric)
                if on_done:
                    on_done(i + 1, len(jobs))
        finally:
            torch.set_num_threads(threads)
        return results
    import multiprocessing

    # spawn, not fork: a forked child of a process that already ran torch's thread pool can deadlock
    ctx = multiprocessing.get_context("spawn")
    ex = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker)
    try:
        futures = {ex.submit(run_job, recipe, seed, metric): (key, seed) for key, recipe, seed in jobs}
        for i, fut in enumerate(as_completed(futures)):
            results[futures[fut]] = fut.result()
            if on_done:
                on_done(i + 1, len(jobs))
    except BaseException:
        ex.shutdown(wait=True, cancel_futures=True)  # a failed row (or Ctrl-C) stops the runs not yet started
        raise
    ex.shutdown()
    return results


@dataclass
class AblationResult:
    """Both views with their numbers, and how they were produced."""

    spec: AblationSpec
    metric: str
    direction: str
    cumulative: list[Row]
    leave_one_out: list[Row]
    unchanged: list[str]
    wall_seconds: float

    def rows(self) -> list[Row]:
        return self.cumulative + self.leave_one_out


def ablate(spec: AblationSpec, on_done: Callable[[int, int], None] | None = None) -> AblationResult:
    """Train every row of both views with every seed (each distinct recipe once per seed) and collect the numbers.

    Example:
        >>> spec = load_ablation("ablation.yaml")  # doctest: +SKIP
        >>> result = ablate(spec)                  # doctest: +SKIP
        >>> print(markdown(result))                # doctest: +SKIP
    """
    from ..engine.metrics import default_metric, direction

    t0 = time.perf_counter()
    task = _task(spec.best)
    metric = spec.metric or spec.best.train.metric or default_metric(task)
    dirn = direction(metric, task)
    cumulative, loo, same = plan(spec)

    def key(d):
        return json.dumps({k: v for k, v in d.items() if k != "seed"}, sort_keys=True)

    unique = {key(r.recipe): r.recipe for r in cumulative + loo}
    # longest runs first, so the last worker is not left alone with a long one
    ordered = sorted(unique.items(), key=lambda kv: -kv[1]["train"]["epochs"])
    jobs = [(k, recipe, s) for k, recipe in ordered for s in spec.seeds]
    results = _run_all(jobs, metric, spec.workers, on_done)
    for row in cumulative + loo:
        for s in spec.seeds:
            r = results[(key(row.recipe), s)]
            row.val.append(r["val"])
            row.test.append(r["test"])
            row.epochs.append(r["epochs"])
            row.seconds.append(r["seconds"])
            if r["failure"]:
                row.failures.append(f"seed {s}: {r['failure']}")
    return AblationResult(spec, metric, dirn, cumulative, loo, same, time.perf_counter() - t0)


# --- statistics -------------------------------------------------------------------------------------


def metric_interval(values: list[float], metric: str) -> tuple[float, float, float, float, int]:
    """:func:`t_interval`, with a share's interval kept within 0..100 %."""
    mean, std, lo, hi, n = t_interval(values)
    if metric in PERCENT_METRICS:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    return mean, std, lo, hi, n


def t_interval(values: list[float]) -> tuple[float, float, float, float, int]:
    """(mean, std, ci_low, ci_high, n) over the finite values; 95% CI of the mean by Student's t."""
    from scipy import stats

    v = [x for x in values if math.isfinite(x)]
    n = len(v)
    if n == 0:
        return (math.nan,) * 4 + (0,)
    mean = statistics.fmean(v)
    if n < 2:
        return mean, math.nan, math.nan, math.nan, n
    std = statistics.stdev(v)
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half, n


def bought(row: Row, reference: Row, view: str, maximize: bool, split_name: str) -> list[float]:
    """Per-seed paired gains of the strategy of ``row`` (positive = it helped)."""
    a, b = getattr(row, split_name), getattr(reference, split_name)
    diffs = [x - y for x, y in zip(a, b)] if view == "cumulative" else [y - x for x, y in zip(a, b)]
    return [d if maximize else -d for d in diffs]


def _reference(result: AblationResult, row: Row) -> Row | None:
    if row.strategy is None:
        return None
    if row.view == "leave_one_out":
        return result.leave_one_out[0]
    return result.cumulative[result.cumulative.index(row) - 1]


def table_rows(result: AblationResult) -> list[dict]:
    """Every row of both views as flat data (the CSV columns)."""
    maximize = result.direction == "maximize"
    out = []
    for row in result.rows():
        d: dict[str, Any] = {"view": row.view, "row": row.label, "strategy": row.strategy or "", "change": row.change,
                             "seeds": len(row.val)}
        ref = _reference(result, row)
        for split_name in ("val", "test"):
            mean, std, lo, hi, n = metric_interval(getattr(row, split_name), result.metric)
            d.update({f"{split_name}_mean": mean, f"{split_name}_std": std, f"{split_name}_ci_low": lo,
                      f"{split_name}_ci_high": hi})
            if ref is not None:
                gm, _, glo, ghi, _ = t_interval(bought(row, ref, row.view, maximize, split_name))
                d.update({f"{split_name}_bought": gm, f"{split_name}_bought_ci_low": glo,
                          f"{split_name}_bought_ci_high": ghi})
            else:
                d.update({f"{split_name}_bought": math.nan, f"{split_name}_bought_ci_low": math.nan,
                          f"{split_name}_bought_ci_high": math.nan})
        d["epochs_mean"] = statistics.fmean(row.epochs)
        d["seconds_mean"] = statistics.fmean(row.seconds)
        d["val_per_seed"] = ";".join(f"{v:.6g}" for v in row.val)
        d["test_per_seed"] = ";".join(f"{v:.6g}" for v in row.test)
        d["failures"] = "; ".join(row.failures)
        out.append(d)
    return out


# --- output -----------------------------------------------------------------------------------------


def metric_format(metric: str) -> Callable[[float | None], str]:
    """How a value of ``metric`` is shown: shares as percent with one decimal, others to 4 digits."""
    scale = 100.0 if metric in PERCENT_METRICS else 1.0

    def f(x: float | None, signed: bool = False) -> str:
        if x is None or not math.isfinite(x):
            return "–"
        return f"{x * scale:+.1f}" if signed and scale == 100 else (
            f"{x * scale:.1f}" if scale == 100 else (f"{x:+.4g}" if signed else f"{x:.4g}"))
    return f


def _fmt(result: AblationResult) -> Callable[[float], str]:
    return metric_format(result.metric)


def cells(result: AblationResult, d: dict) -> dict[str, str]:
    """Formatted cells of one table row: value ± std, [CI], bought [CI], for val and test."""
    f = _fmt(result)
    out = {}
    for s in ("val", "test"):
        out[s] = f"{f(d[f'{s}_mean'])} ± {f(d[f'{s}_std'])}"
        out[f"{s}_ci"] = f"[{f(d[f'{s}_ci_low'])}, {f(d[f'{s}_ci_high'])}]"
        out[f"{s}_bought"] = ("" if not math.isfinite(d[f"{s}_bought"]) else
                              f"{f(d[f'{s}_bought'], True)} [{f(d[f'{s}_bought_ci_low'], True)}, "
                              f"{f(d[f'{s}_bought_ci_high'], True)}]")
    return out


def markdown(result: AblationResult, title: str | None = None) -> str:
    """Both views as Markdown tables, with what the numbers mean."""
    spec = result.spec
    unit = " (%)" if result.metric in PERCENT_METRICS else ""
    rows = table_rows(result)
    seeds = ", ".join(map(str, spec.seeds))
    lines = [f"### {title}" if title else "### What each strategy bought", "",
             f"Baseline: {spec.baseline_source}. Best: {spec.best_source}. Metric: {result.metric}{unit}, "
             f"mean ± std over seeds {seeds} with the 95% confidence interval of the mean (t, n − 1 = "
             f"{len(spec.seeds) - 1}). *Bought*: paired difference over the same seeds, positive = the strategy "
             f"helped (cumulative: row − previous row; leave-one-out: best − row). **Validation** is for choices; "
             f"**test** is the final evaluation of each row's recipe, never used to choose.", ""]
    for view, heading in (("cumulative", "Cumulative: from the baseline, add one strategy at a time"),
                          ("leave_one_out", "Leave-one-out: from the best, revert one strategy at a time")):
        lines += [f"**{heading}**", "",
                  f"| row | val {result.metric} | val 95% CI | bought (val) | test {result.metric} | test 95% CI | "
                  f"bought (test) | epochs | s/run | what changed |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for d in rows:
            if d["view"] != view:
                continue
            c = cells(result, d)
            change = d["change"].replace("|", "\\|") + (f" ({d['failures']})" if d["failures"] else "")
            lines.append(f"| {d['row']} | {c['val']} | {c['val_ci']} | {c['val_bought']} | {c['test']} | "
                         f"{c['test_ci']} | {c['test_bought']} | {d['epochs_mean']:.0f} | {d['seconds_mean']:.1f} | "
                         f"{change} |")
        lines.append("")
    if result.unchanged:
        lines.append(f"Strategies the two recipes share (no row): {', '.join(result.unchanged)}.")
    data_note = _data_note(spec)
    if data_note:
        lines.append(data_note)
    n_runs = len({json.dumps(r.recipe, sort_keys=True) for r in result.rows()}) * len(spec.seeds)
    lines.append(f"{n_runs} training runs, {spec.workers} worker process(es), {result.wall_seconds:.0f} s wall.")
    return "\n".join(lines) + "\n"


def _data_note(spec: AblationSpec) -> str:
    a, b = spec.baseline.data, spec.best.data
    if a == b:
        return ""
    diff = describe_change(a.model_dump(mode="json"), b.model_dump(mode="json"))
    return f"Every row uses the best's data section (the baseline's differs: {diff})."


def write_csv(result: AblationResult, path: Path) -> None:
    rows = table_rows(result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for d in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in d.items()})
    path.write_text(buf.getvalue())


def plot(result: AblationResult, path: Path) -> None:
    """Horizontal bars per row (validation and test means) with 95% CI error bars, one panel per view."""
    from matplotlib.figure import Figure

    scale = 100.0 if result.metric in PERCENT_METRICS else 1.0
    views = (("cumulative", result.cumulative), ("leave-one-out", result.leave_one_out))
    height = 1.2 + 0.42 * (len(result.cumulative) + len(result.leave_one_out))
    fig = Figure(figsize=(8.0, height), dpi=110)
    axes = fig.subplots(2, 1, height_ratios=[len(result.cumulative), len(result.leave_one_out)])
    lows, highs = [], []
    for ax, (name, rows) in zip(axes, views):
        ys = list(range(len(rows)))[::-1]
        for j, (split_name, color) in enumerate((("val", "C0"), ("test", "C1"))):
            means, errs = [], [[], []]
            for row in rows:
                m, _, lo, hi, _ = metric_interval(getattr(row, split_name), result.metric)
                means.append(m * scale)
                errs[0].append((m - lo) * scale if math.isfinite(lo) else 0)
                errs[1].append((hi - m) * scale if math.isfinite(hi) else 0)
                if math.isfinite(m):
                    lows.append((lo if math.isfinite(lo) else m) * scale)
                    highs.append((hi if math.isfinite(hi) else m) * scale)
            offs = [y + (0.2 if j == 0 else -0.2) for y in ys]
            ax.barh(offs, means, height=0.38, xerr=errs, color=color, alpha=0.85, capsize=3,
                    label="validation" if split_name == "val" else "test (final evaluation)")
        ax.set_yticks(ys, [r.label for r in rows], fontsize=8)
        ax.set_title(f"{name}", fontsize=9, loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    note = ""
    if lows:
        lo, hi = min(lows), max(highs)
        pad = max((hi - lo) * 0.1, 1e-6)
        lo, hi = lo - pad, hi + pad
        if scale == 100:  # a share: the axis stays within 0..100 %
            lo, hi = max(lo, 0.0), min(hi, 100.0)
        for ax in axes:
            ax.set_xlim(lo, hi)
        note = " (axis does not start at 0)" if lo > 0 else ""
    unit = " (%)" if scale == 100 else ""
    axes[-1].set_xlabel(f"{result.metric}{unit}: mean over {len(result.spec.seeds)} seeds, 95% CI{note}")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def write(result: AblationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ablation.md, ablation.csv, ablation.png, ablation.json and every row's recipe to ``out_dir``."""
    from ..engine.checkpoint import atomic_write_text, write_json

    out = Path(out_dir)
    (out / "recipes").mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "ablation.md", "csv": out / "ablation.csv", "png": out / "ablation.png",
             "json": out / "ablation.json"}
    atomic_write_text(paths["md"], markdown(result))
    write_csv(result, paths["csv"])
    plot(result, paths["png"])
    for i, row in enumerate(result.rows()):
        name = re.sub(r"[^a-z0-9]+", "-", f"{row.view} {i:02d} {row.strategy or row.label}".lower()).strip("-")
        atomic_write_text(out / "recipes" / f"{name}.yaml", f"# {row.view}: {row.label}\n" +
                          yaml.safe_dump(row.recipe, sort_keys=False))
    spec = result.spec
    write_json(paths["json"], {
        "metric": result.metric, "direction": result.direction, "seeds": spec.seeds, "workers": spec.workers,
        "baseline": spec.baseline_source, "best": spec.best_source, "strategies": spec.strategies,
        "unchanged": result.unchanged, "wall_seconds": round(result.wall_seconds, 2),
        "rows": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
                 for d in table_rows(result)]})
    return paths


def print_table(result: AblationResult, console) -> None:
    """Both views as compact rich tables: mean ± std, ± the 95% CI half-width (t), and what the strategy bought."""
    from rich import box
    from rich.table import Table

    f = _fmt(result)
    unit = " %" if result.metric in PERCENT_METRICS else ""
    for view, title in (("cumulative", "cumulative: baseline + one strategy at a time (last row = best)"),
                        ("leave_one_out", "leave-one-out: best − one strategy at a time")):
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        t.add_column("row", no_wrap=True)
        for col in (f"val{unit}", "CI95 ±", "bought", f"test{unit}", "CI95 ±", "bought"):
            t.add_column(col, justify="right", no_wrap=True)
        for d in table_rows(result):
            if d["view"] != view:
                continue
            row = [d["row"].replace(" (= best)", "") + (" [red]![/red]" if d["failures"] else "")]
            for s in ("val", "test"):
                half = (d[f"{s}_ci_high"] - d[f"{s}_ci_low"]) / 2
                row += [f"{f(d[f'{s}_mean'])}±{f(d[f'{s}_std'])}", f(half), f(d[f"{s}_bought"], True)
                        if math.isfinite(d[f"{s}_bought"]) else ""]
            t.add_row(*row)
        console.print(t)
    console.print(f"{len(result.spec.seeds)} seeds; validation is for choices, test is the final evaluation; "
                  f"bought = paired gain (cumulative: vs the row above; leave-one-out: best vs the row); "
                  f"{result.wall_seconds:.0f} s")
