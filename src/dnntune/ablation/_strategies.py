"""Strategies as groups of recipe fields, and recipes assembled from two recipes' strategies."""

from __future__ import annotations

import copy
from typing import Any

from ..config import Recipe

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
        d["loss"] = {"name": {"classification": "cross_entropy", "multilabel": "bce"}.get(task, "mse")}
        if task in ("classification", "multilabel"):
            d["loss"]["label_smoothing"] = 0.0
        if task == "multilabel":
            d["loss"]["pos_weight"] = None
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

