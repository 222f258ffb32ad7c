"""Warm-started studies: ``search.warm_start`` tries the best recipes of earlier studies first.

Each source (a ``dnntune tune`` folder, or ``STORAGE#STUDY`` with a journal file or a database URL) gives its
top ``search.warm_start_top_k`` complete trials, ranked by the source's own first objective
(:func:`dnntune.search.selection.top_trials`). Each trial's parameters are translated into the new space:

* a parameter that is not a dimension of the new space is dropped (the new experiment's fixed value holds);
* a value outside the new dimension (range, step or choices) makes the recipe invalid, and so does an
  option the source chose (``model.family = resnet``) where the new experiment fixes another one;
  an invalid recipe is skipped with one line naming the trial and the parameter;
* dimensions the source lacks are left to the sampler (Optuna's ``enqueue_trial`` with partial params).

The translated recipes are enqueued once, when the study is created, before any sampled trial, each with
the user attribute ``warm_start_from = "<source>#<trial number>"`` (the report marks them). Identical
parameter sets are enqueued once. Enqueued trials are ordinary trials of the new study: they use its budget
and compete for its best trial like any other.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ..config import NAMED, SearchSection
from ..errors import ConfigError
from . import storage as st
from .selection import top_trials
from .space import _at, _encode, _suggest, check_space
from .study import DIRECTIONS_KEY, OBJECTIVES_KEY, Objectives

WARM_START_ATTR = "warm_start_from"   # trial user attribute: "<source>#<trial number>"
WARM_START_KEY = "dnntune:warm_start"  # study user attribute: what was enqueued, set once


@dataclass
class Source:
    """One resolved ``search.warm_start`` entry."""

    text: str          # as the user wrote it (labels the enqueued trials)
    study: optuna.Study
    storage: str       # where the study was found (for messages)


# --- finding the source study ------------------------------------------------------------------------


def _field(i: int) -> str:
    return f"search.warm_start[{i}]"


def _summary_study(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("study")
    except (OSError, ValueError, AttributeError):
        return None


def _open_source_storage(where: str, field: str) -> tuple[Any, str, Path | None]:
    """The storage a source names (never creating one): (storage, description, its tune folder or None)."""
    if "://" in where:
        if where.startswith("sqlite:///") and not Path(where[len("sqlite:///"):]).is_file():
            raise ConfigError(f"{field}: {where}: no such SQLite file")
        try:
            return st.open_storage(where), where, None
        except ConfigError as e:
            raise ConfigError(f"{field}: {e}") from None
    path = Path(where).expanduser()
    run_dir = None
    if path.is_dir():
        run_dir, path = path, path / st.JOURNAL_NAME
        if not path.is_file():
            raise ConfigError(f"{field}: {where}: not a `dnntune tune` folder (no {st.JOURNAL_NAME} in it); give "
                              "a tune folder or STORAGE#STUDY (a journal file or a database URL, then # and the study)")
    elif not path.is_file():
        raise ConfigError(f"{field}: {where}: no such tune folder or journal file")
    return st.open_storage(str(path)), str(path), run_dir


def resolve_source(text: str, i: int) -> Source:
    """``RUN_DIR`` or ``STORAGE#STUDY`` → the loaded study; a ConfigError naming the entry otherwise."""
    field = _field(i)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{field}: give a tune folder or STORAGE#STUDY, got {text!r}")
    where, sep, name = text.rpartition("#") if "#" in text else (text, "", "")
    if sep and not (where and name):
        raise ConfigError(f"{field}: {text!r}: STORAGE#STUDY needs both a storage and a study name")
    storage, desc, run_dir = _open_source_storage(where, field)
    names = st.study_names(storage)
    if not name:
        name = _summary_study(run_dir) if run_dir is not None else None
        if name is None:
            if len(names) != 1:
                raise ConfigError(f"{field}: {desc} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                                  f"name one as {where}#STUDY")
            name = names[0]
    if name not in names:
        raise ConfigError(f"{field}: no study named {name!r} in {desc}; studies there: {', '.join(names) or '(none)'}")
    return Source(text, optuna.load_study(study_name=name, storage=storage), desc)


def resolve_sources(search: SearchSection) -> list[Source]:
    """Every ``search.warm_start`` entry, loaded (the first bad one is a ConfigError)."""
    if search.warm_start and search.sampler == "grid":
        raise ConfigError("search.warm_start: not with search.sampler: grid (a grid runs its own points only); "
                          "use tpe, random, gp, cmaes or nsga2")
    return [resolve_source(text, i) for i, text in enumerate(search.warm_start or [])]


# --- the new space -----------------------------------------------------------------------------------


class _Recorder:
    """A stand-in trial that records the Optuna distribution each dimension is suggested with
    (:func:`dnntune.search.space._suggest`, so the distributions are exactly those trials use)."""

    def __init__(self):
        self.dist: BaseDistribution | None = None

    def suggest_float(self, name, low, high, log=False, step=None):
        self.dist = FloatDistribution(low, high, log=log, step=step)
        return low

    def suggest_int(self, name, low, high, log=False, step=1):
        self.dist = IntDistribution(low, high, log=log, step=step)
        return low

    def suggest_categorical(self, name, choices):
        self.dist = CategoricalDistribution(choices)
        return choices[0]


def space_distributions(experiment: dict) -> dict[str, BaseDistribution]:
    """Every dimension of an experiment as Optuna's parameter name (the dotted path) → its distribution."""
    out = {}
    for path in check_space(experiment):
        rec = _Recorder()
        _suggest(rec, path, _at(experiment, path))
        out[path] = rec.dist
    return out


def _contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return "choices " + ", ".join(map(repr, dist.choices))
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    extra = ", log" if dist.log else (f", step {dist.step:g}" if dist.step not in (None, 1) else "")
    return f"{kind} [{dist.low:g}, {dist.high:g}]{extra}"


def translate(params: dict[str, Any], space: dict[str, BaseDistribution], experiment: dict
              ) -> tuple[dict[str, Any] | None, str]:
    """A source trial's params in the new space: (params, "") or (None, why the recipe does not fit)."""
    out = {}
    for name, value in params.items():
        if name not in space:
            continue
        if not _contains(space[name], value):
            return None, f"{name} = {value!r} is outside the new space ({_describe(space[name])})"
        out[name] = value
    for section, (_, key, _) in NAMED.items():  # an option the source chose that the new experiment fixes otherwise
        name = f"{section}.{key}"
        node = experiment.get(section)
        if name in params and name not in space and isinstance(node, dict) and key in node:
            if _encode(node[key]) != params[name]:
                return None, f"{name} = {params[name]!r}, but the new experiment fixes {node[key]!r}"
    if not out:
        return None, "no parameter in common with the new space"
    return out, ""


# --- enqueueing --------------------------------------------------------------------------------------


def _warn(msg: str) -> None:
    print(f"dnntune: warm start: {msg}", file=sys.stderr)


def _source_directions(source: optuna.Study) -> tuple[list[str], list[str]]:
    attrs = source.user_attrs
    directions = list(attrs.get(DIRECTIONS_KEY) or [d.name.lower() for d in source.directions])
    names = list(attrs.get(OBJECTIVES_KEY) or ["value"] * len(directions))
    return names, directions


def candidates(source: Source, objectives: Objectives, k: int) -> list[FrozenTrial]:
    """The source's top ``k`` complete trials by its own first objective (warns when it differs from ours)."""
    names, directions = _source_directions(source.study)
    if names[0] != objectives.names[0] or directions[0] != objectives.directions[0]:
        _warn(f"{source.text}: its trials are ranked by its own objective {names[0]} ({directions[0]}), "
              f"not by this study's {objectives.names[0]} ({objectives.directions[0]})")
    complete = source.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        _warn(f"{source.text}: study {source.study.study_name!r} has no complete trial; nothing to try from it")
        return []
    return top_trials(complete, directions[:1], k=k)


def plan(experiment: dict, search: SearchSection, objectives: Objectives) -> list[tuple[dict, str]]:
    """The (params, warm_start_from) pairs to enqueue, in order: each source's best first; skipped recipes
    are reported on stderr, one line each."""
    space = space_distributions(experiment)
    planned: list[tuple[dict, str]] = []
    seen: set[str] = set()
    for source in resolve_sources(search):
        for trial in candidates(source, objectives, search.warm_start_top_k):
            label = f"{source.text}#{trial.number}"
            params, why = translate(trial.params, space, experiment)
            if params is None:
                _warn(f"skipped trial {label}: {why}")
                continue
            key = json.dumps(params, sort_keys=True, default=str)
            if key in seen:
                _warn(f"skipped trial {label}: the same parameters as a recipe already enqueued")
                continue
            seen.add(key)
            planned.append((params, label))
    return planned


def enqueue_warm_start(study: optuna.Study, experiment: dict, search: SearchSection, objectives: Objectives,
                       quiet: bool = False) -> int:
    """Enqueue the warm-start recipes into a new study (once: a study that has trials or was warm-started
    already is left alone). Returns the number enqueued."""
    if not search.warm_start or WARM_START_KEY in study.user_attrs or study.get_trials(deepcopy=False):
        return 0
    planned = plan(experiment, search, objectives)
    if search.n_trials is not None and len(planned) > search.n_trials:
        _warn(f"only the first {search.n_trials} of {len(planned)} recipes fit search.n_trials")
        planned = planned[:search.n_trials]
    for params, label in planned:
        study.enqueue_trial(params, user_attrs={WARM_START_ATTR: label}, skip_if_exists=False)
    study.set_user_attr(WARM_START_KEY, {"sources": list(search.warm_start), "enqueued": len(planned)})
    if not quiet:
        print(f"dnntune: warm start: {len(planned)} recipe(s) from {', '.join(search.warm_start)} run first",
              file=sys.stderr)
    return len(planned)
