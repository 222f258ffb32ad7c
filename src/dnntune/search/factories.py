"""``search.sampler`` and ``search.pruner`` → Optuna samplers and pruners (the defaults live in
:class:`~dnntune.config.SearchSection`, nowhere else)."""

from __future__ import annotations

import math

import optuna

from ..errors import ConfigError
from .space import grid_space

MAX_GRID = 100_000


def max_epochs(experiment: dict) -> int:
    """The longest a trial can train: ``train.epochs``, or the top of its dimension."""
    from ..config import TrainSection

    e = (experiment.get("train") or {}).get("epochs", TrainSection.model_fields["epochs"].default)
    if isinstance(e, dict):
        e = max(e.get("int") or e.get("float") or e.get("choice"))
    return int(e)


def make_sampler(name: str, experiment: dict, seed: int | None, workers: int, n_trials: int | None):
    """Optuna sampler for ``search.sampler``; TPE is multivariate, grouped for conditional spaces,
    and uses the constant liar when trials run in parallel."""
    s = optuna.samplers
    if name == "tpe":
        startup = 10 if n_trials is None else max(4, min(10, n_trials // 4))
        return s.TPESampler(multivariate=True, group=True, constant_liar=workers > 1, seed=seed,
                            n_startup_trials=startup)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "grid":
        space = grid_space(experiment)
        size = math.prod(len(v) for v in space.values())
        if size > MAX_GRID:  # Optuna materializes every point: a large grid exhausts memory
            widest = sorted(space, key=lambda k: -len(space[k]))[:3]
            raise ConfigError(f"search.sampler: grid over this space has {size:.3g} points (more than {MAX_GRID:,}; "
                              f"widest: {', '.join(f'{k} ({len(space[k])})' for k in widest)}); fix some values, set "
                              f"`grid: N` on numeric dimensions, or use tpe/random")
        return s.GridSampler(space, seed=seed)
    if name == "gp":
        return s.GPSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":
        return s.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return s.NSGAIISampler(seed=seed)
    raise ConfigError(f"search.sampler: unknown sampler {name!r}; allowed: tpe, random, grid, gp, cmaes, nsga2")


def make_pruner(name: str, epochs: int):
    """Optuna pruner for ``search.pruner``, working on the per-epoch validation metric."""
    p = optuna.pruners
    if name == "none":
        return p.NopPruner()
    if name == "median":
        return p.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 10))
    if name == "asha":
        # rungs at min_resource × 3^k epochs: ~4 rungs over the full length
        return p.SuccessiveHalvingPruner(min_resource=max(1, round(epochs / 27)), reduction_factor=3)
    if name == "hyperband":
        return p.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    raise ConfigError(f"search.pruner: unknown pruner {name!r}; allowed: none, median, asha, hyperband")
