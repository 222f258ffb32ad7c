"""Search spaces: experiment dimensions → ``trial.suggest_*`` → a concrete recipe.

Dimensions (anywhere in the experiment):
``{float: [lo, hi], log: true, step: 0.1}``, ``{int: [lo, hi], log: false, step: 1}``,
``{choice: [a, b, c]}``. A section whose ``name``/``family`` is a choice may hold knobs per option
(``model: {family: {choice: [mlp, cnn1d]}, mlp: {width: {int: [64, 512]}}, cnn1d: {...}}``): only
the chosen option's knobs are suggested (conditional space), under the parameter name
``model.mlp.width`` so each option keeps its own distribution. An option's block may also set the
section's own fields (``optim: {sgd: {lr: ...}}``); recipes and spaces resolve blocks alike
(:func:`dnntune.config.merge_chosen_option`).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import optuna

from ..config import (
    DIMENSION_KEYS,
    NAMED,
    Recipe,
    find_dimensions,
    is_dimension,
    merge_chosen_option,
    option_block,
    registered_options,
    validate_recipe,
)
from ..errors import ConfigError

PRIMITIVE = (str, int, float, bool, type(None))


def _check_dimension(path: str, dim: dict) -> None:
    kind = next(k for k in DIMENSION_KEYS if k in dim)
    allowed = {"float": {"float", "log", "step", "grid"}, "int": {"int", "log", "step", "grid"},
               "choice": {"choice"}}[kind]
    extra = set(dim) - allowed
    if extra:
        raise ConfigError(f"{path}: unknown key {sorted(extra)[0]!r} in a {kind} dimension; "
                          f"allowed: {', '.join(sorted(allowed))}")
    spec = dim[kind]
    if kind == "choice":
        if not isinstance(spec, list) or not spec:
            raise ConfigError(f"{path}: choice needs a non-empty list of options, got {spec!r}")
        return
    if not (isinstance(spec, list) and len(spec) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                               for v in spec)):
        raise ConfigError(f"{path}: {kind} needs [low, high] numbers, got {spec!r}")
    lo, hi = spec
    if kind == "int" and not (float(lo).is_integer() and float(hi).is_integer()):
        raise ConfigError(f"{path}: int bounds must be integers, got {spec!r}")
    if lo > hi:
        raise ConfigError(f"{path}: low {lo} is above high {hi}")
    if dim.get("log") and lo <= 0:
        raise ConfigError(f"{path}: log scale needs low > 0, got {lo}")
    if dim.get("log") and dim.get("step"):
        raise ConfigError(f"{path}: step and log cannot be combined")


def check_space(raw: dict) -> list[str]:
    """Validate the syntax of every dimension; returns their dotted paths."""
    paths = find_dimensions({k: v for k, v in raw.items() if k != "search"})
    for p in paths:
        node: Any = raw
        for k in p.split("."):
            node = node[k]
        _check_dimension(p, node)
    return paths


def _encode(v: Any) -> Any:
    return v if isinstance(v, PRIMITIVE) else json.dumps(v)


def _suggest(trial: optuna.Trial, name: str, dim: dict) -> Any:
    if "float" in dim:
        lo, hi = dim["float"]
        return trial.suggest_float(name, float(lo), float(hi), log=bool(dim.get("log")), step=dim.get("step"))
    if "int" in dim:
        lo, hi = dim["int"]
        return trial.suggest_int(name, int(lo), int(hi), log=bool(dim.get("log")), step=int(dim.get("step") or 1))
    options = dim["choice"]
    encoded = [_encode(o) for o in options]
    picked = trial.suggest_categorical(name, encoded)
    return options[encoded.index(picked)]


def _resolve(node: Any, path: str, trial: optuna.Trial, section: str | None = None) -> Any:
    if is_dimension(node):
        return _suggest(trial, path, node)
    if not isinstance(node, dict):
        return node
    key = NAMED[section][1] if section in NAMED else None
    if key is not None and key in node:
        # the name first: it decides which per-option knobs exist (config.merge_chosen_option, as for a
        # recipe); the chosen option's knobs are suggested under `section.option.knob`
        chosen = _resolve(node[key], f"{path}.{key}", trial)
        block = option_block(node, chosen)
        out = {key: chosen}
        for k, v in merge_chosen_option(section, node, chosen, registered_options(section)).items():
            if k != key:
                out[k] = _resolve(v, f"{path}.{chosen}.{k}" if k in block else f"{path}.{k}", trial)
        return out
    out = {}
    for k, v in node.items():
        out[k] = _resolve(v, f"{path}.{k}" if path else str(k), trial, section=str(k) if not path else None)
    return out


def suggest_recipe(trial: optuna.Trial, experiment: dict) -> dict:
    """The raw recipe of one trial: every dimension replaced by Optuna's suggestion."""
    body = {k: v for k, v in experiment.items() if k != "search"}
    raw = _resolve(copy.deepcopy(body), "", trial)
    raw["search"] = experiment.get("search", {})
    return raw


class _FirstValues:
    """A stand-in trial that picks fixed positions of each dimension, to validate a space up front."""

    def __init__(self, pos: float, option: dict[str, int]):
        self.pos = pos
        self.option = option

    def suggest_float(self, name, lo, hi, log=False, step=None):
        if log:
            return math.exp(math.log(lo) + self.pos * (math.log(hi) - math.log(lo)))
        v = lo + self.pos * (hi - lo)
        return lo + round((v - lo) / step) * step if step else v

    def suggest_int(self, name, lo, hi, log=False, step=1):
        return int(lo + round(self.pos * (hi - lo) / step) * step)

    def suggest_categorical(self, name, options):
        return options[self.option.get(name, 0) % len(options)]


def validate_experiment(experiment: dict, source: str = "experiment") -> Recipe:
    """Check an experiment before any trial runs: dimension syntax, and that the recipes at the low and
    high ends of the space, with every option of every choice, validate. Returns one sample recipe."""
    check_space(experiment)
    choice_paths = [p for p in find_dimensions(experiment) if "choice" in _at(experiment, p)]
    sample = None
    variants = [{p: i} for p in choice_paths for i in range(len(_at(experiment, p)["choice"]))] or [{}]
    for pos in (0.0, 1.0):
        for option in variants:
            raw = suggest_recipe(_FirstValues(pos, option), experiment)
            try:
                recipe = validate_recipe(raw, source)
            except ConfigError as e:
                if option:
                    (p, i), = option.items()
                    raise ConfigError(f"{e} (when {p} = {_at(experiment, p)['choice'][i]!r})") from None
                raise
            sample = sample or recipe
    return sample


def _at(raw: dict, path: str) -> Any:
    node: Any = raw
    for k in path.split("."):
        node = node[k]
    return node


def grid_space(experiment: dict, points: int = 4) -> dict[str, list]:
    """Optuna GridSampler's search space: choices as given; numeric dimensions at ``grid`` points
    (``{float: [1e-4, 1e-1], log: true, grid: 4}``; default 4, or every int when there are few)."""
    space: dict[str, list] = {}
    for p in check_space(experiment):
        dim = _at(experiment, p)
        name = p  # parameter names are the dotted paths, as in _resolve
        if "choice" in dim:
            space[name] = [_encode(o) for o in dim["choice"]]
            continue
        kind = "float" if "float" in dim else "int"
        lo, hi = dim[kind]
        n = int(dim.get("grid", points))
        if kind == "int" and hi - lo + 1 <= max(n, 1) and not dim.get("log"):
            space[name] = list(range(int(lo), int(hi) + 1))
            continue
        if dim.get("log"):
            vals = [math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / max(n - 1, 1)) for i in range(n)]
        else:
            vals = [lo + i * (hi - lo) / max(n - 1, 1) for i in range(n)]
        space[name] = sorted({int(round(v)) for v in vals}) if kind == "int" else [float(f"{v:.6g}") for v in vals]
    return space
