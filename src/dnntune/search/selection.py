"""Which trials are best: one module, used by the runner, ``dnntune best``, the final model and the report.

The direction of the first objective becomes a sign once, here (``+1`` maximize, ``-1`` minimize), and
trials are then ranked by ``sign × value``; ties of the value go to the lower validation log-loss
(``metrics.tie_loss``), as ties of the best epoch do in the trainer. A complete trial outranks a pruned
one; with no complete trial (every trial pruned, a study cut short), pruned trials are ranked by their
best reported value, so a study always yields a final model.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..engine.metrics import tie_loss


def sign(direction: str) -> int:
    """+1 for ``maximize``, -1 for ``minimize``: the one place a direction is interpreted."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {direction!r}")
    return 1 if direction == "maximize" else -1


def trial_value(trial: FrozenTrial, direction: str) -> float:
    """A trial's value on the first objective; a pruned trial's best reported value."""
    if trial.values:
        return trial.values[0]
    s = sign(direction)
    return s * max(s * v for v in trial.intermediate_values.values())


def _rankable(trial: FrozenTrial) -> bool:
    if trial.state == TrialState.COMPLETE:
        return bool(trial.values) and math.isfinite(trial.values[0])
    return trial.state == TrialState.PRUNED and bool(trial.intermediate_values) and "recipe" in trial.user_attrs


def _key(trial: FrozenTrial, direction: str) -> tuple:
    """Larger is better: complete before pruned, then sign × value, then the lower validation log-loss,
    then the earlier trial (so a rank never depends on the order trials are listed in)."""
    return (trial.state == TrialState.COMPLETE, sign(direction) * trial_value(trial, direction),
            -tie_loss(trial.user_attrs.get("val") or {}), -trial.number)


def top_trials(study: optuna.Study | list[FrozenTrial], directions: list[str], k: int | None = None
               ) -> list[FrozenTrial]:
    """The best ``k`` trials (all when None), best first. Several objectives: the Pareto front first,
    each group ranked on the first objective.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(direction="minimize")
        >>> study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.5) ** 2, n_trials=8)
        >>> best = top_trials(study, ["minimize"], k=1)[0]
        >>> best.value == study.best_value
        True
    """
    trials = study if isinstance(study, list) else study.get_trials(deepcopy=False)
    pool = [t for t in trials if _rankable(t)]
    if len(directions) > 1:
        front = {t.number for t in _pareto_front([t for t in pool if t.state == TrialState.COMPLETE], directions)}
        ranked = sorted(pool, key=lambda t: (t.number in front, *_key(t, directions[0])), reverse=True)
    else:
        ranked = sorted(pool, key=lambda t: _key(t, directions[0]), reverse=True)
    return ranked if k is None else ranked[:k]


def best_trial(study: optuna.Study | list[FrozenTrial], directions: list[str]) -> FrozenTrial | None:
    """The best trial (see the module docstring), or None when no trial has a value."""
    top = top_trials(study, directions, k=1)
    return top[0] if top else None


def _pareto_front(trials: list[FrozenTrial], directions: list[str]) -> list[FrozenTrial]:
    signs = [sign(d) for d in directions]

    def dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values)]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]
