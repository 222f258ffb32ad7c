"""The rows of both views: *cumulative* (from the baseline, one more strategy per row) and *leave-one-out*
(from the best, one strategy reverted per row)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..config import validate_recipe
from ..errors import ConfigError
from ._spec import AblationSpec, _task
from ._strategies import ORDER, _plain, assemble, describe_change


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

def recipe_key(d: dict) -> str:
    """What makes two rows' recipes (plain data) the same run, whatever their seed."""
    return json.dumps({k: v for k, v in d.items() if k != "seed"}, sort_keys=True)


def plan(spec: AblationSpec) -> tuple[list[Row], list[Row], list[str]]:
    """The rows of both views (without numbers) and the strategies the two recipes share."""
    task = _task(spec.best)
    base, best = _plain(spec.baseline, task), _plain(spec.best, task)
    seed = spec.seeds[0]
    everything = set(ORDER)
    full = assemble(base, best, everything, seed)
    changed = [s for s in spec.strategies
               if recipe_key(assemble(base, best, everything - {s}, seed)) != recipe_key(full)]
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
