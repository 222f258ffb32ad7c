"""``search.lr_prior: range_test``: narrow the learning-rate dimension around a range test before a study.

Before the first trial, the learning-rate range test (:mod:`dnntune.engine.lr_find`) runs on the
experiment's middle recipe (every numeric dimension at the middle of its range, on the log scale where the
dimension is log; the first option of every choice) and each learning-rate dimension becomes
``{float: [s / 10, s × 3], log: true}`` around the suggestion ``s``. The narrowed range replaces the
original one (it may reach outside it: the test is evidence, the original range a guess).

Good learning rates differ by orders of magnitude between optimizers, so when ``optim.name`` is a choice
the test runs once per optimizer and a shared ``optim.lr`` dimension becomes one dimension per optimizer
(``optim.<name>.lr``, as a conditional knob). The original and narrowed ranges are kept in the study's
user attribute ``dnntune:lr_prior``; a continued study reuses them instead of testing again.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

from ..config import is_dimension, validate_recipe
from ..errors import ConfigError

LR_PRIOR_KEY = "dnntune:lr_prior"
LOW_FACTOR, HIGH_FACTOR = 0.1, 3.0


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x))


def _middle_recipe(experiment: dict, optimizer_index: int | None):
    from .space import _FirstValues, suggest_recipe

    option = {} if optimizer_index is None else {"optim.name": optimizer_index}
    return validate_recipe(suggest_recipe(_FirstValues(0.5, option), experiment), "lr_prior: middle recipe")


def narrowed(suggestion: float) -> dict:
    return {"float": [float(f"{suggestion * LOW_FACTOR:.4g}"), float(f"{suggestion * HIGH_FACTOR:.4g}")], "log": True}


def _targets(optim: dict) -> list[tuple[int | None, str, str]]:
    """The learning-rate dimensions to narrow: (option index or None, optimizer, parameter path)."""
    name = optim.get("name", "adamw")
    options = name["choice"] if is_dimension(name) and "choice" in name else None
    if options is None:
        return [(None, str(name), "optim.lr")] if is_dimension(optim.get("lr")) else []
    targets = []
    shared = is_dimension(optim.get("lr"))
    for i, opt in enumerate(options):
        own = optim.get(opt) if isinstance(optim.get(opt), dict) else None
        if own is not None and "lr" in own:
            if is_dimension(own["lr"]):
                targets.append((i, opt, f"optim.{opt}.lr"))
        elif shared:
            targets.append((i, opt, f"optim.{opt}.lr"))
    return targets


def apply_lr_prior(experiment: dict, previous: dict | None = None, quiet: bool = True) -> tuple[dict, dict]:
    """The experiment with its learning-rate dimension(s) narrowed, and the record of what was done.

    ``previous`` is the record of an earlier run of the same study: when its original ``optim`` section
    equals this experiment's, its narrowed section is reused (no new range test).
    """
    from ..engine.lr_find import lr_find
    from .objective import DataCache

    optim = experiment.get("optim")
    if not isinstance(optim, dict):
        raise ConfigError("search.lr_prior: range_test narrows the optim.lr search dimension, but the experiment "
                          "has no optim section")
    if previous and _plain(previous.get("optim_original")) == _plain(optim):
        out = copy.deepcopy(experiment)
        out["optim"] = copy.deepcopy(previous["optim_narrowed"])
        return out, previous
    targets = _targets(optim)
    if not targets:
        raise ConfigError(f"search.lr_prior: range_test narrows the optim.lr search dimension, but optim.lr is "
                          f"fixed ({optim.get('lr', 'the default 0.001')}); make it a dimension, e.g. "
                          f"{{float: [1e-5, 1.0], log: true}}, or set search.lr_prior: none")
    new, tests, cache = copy.deepcopy(optim), [], DataCache()
    for index, opt, path in targets:
        recipe = _middle_recipe(experiment, index)
        res = lr_find(recipe, data=cache.get(recipe))
        dim = narrowed(res.suggestion)
        if index is None:
            original = optim["lr"]
            new["lr"] = dim
        else:
            own = new.get(opt) if isinstance(new.get(opt), dict) else {}
            original = own.get("lr", optim.get("lr"))
            new[opt] = {**own, "lr": dim}
        tests.append({"param": path, "optimizer": opt, "suggestion": res.suggestion, "original": original,
                      "narrowed": dim, "steps": len(res.lrs), "stopped": res.stopped, "batch_size": res.batch_size})
        if not quiet:
            print(f"lr range test ({opt}, batch {res.batch_size}): suggested lr {res.suggestion:.3g}; {path} "
                  f"{original.get('float') if isinstance(original, dict) else original} → {dim['float']}",
                  file=sys.stderr)
    name = optim.get("name")
    options = name["choice"] if is_dimension(name) and "choice" in name else None
    if options is not None and "lr" in new and all(isinstance(new.get(o), dict) and "lr" in new[o] for o in options):
        del new["lr"]  # every optimizer has its own now
    out = copy.deepcopy(experiment)
    out["optim"] = new
    record = {"rule": f"[suggestion × {LOW_FACTOR:g}, suggestion × {HIGH_FACTOR:g}], log; suggestion = "
                      f"lr at the minimum of the smoothed range-test loss / 10",
              "tests": tests, "optim_original": _plain(optim), "optim_narrowed": _plain(new)}
    return out, record
