"""A read-only view of a study for the report: trials by state, ranking, curves, run-folder files."""

from __future__ import annotations

import json
import math
from functools import cached_property
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..search.selection import best_trial, top_trials, trial_value

FAIL_REASON = "fail_reason"
OWNER_KEY = "dnntune:owner"


def finite(values) -> bool:
    return values is not None and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


class StudyView:
    """What the report needs of one study, computed once."""

    def __init__(self, study: optuna.Study, run_dir: Path | None = None, storage: str = ""):
        self.study = study
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.storage = storage
        attrs = study.user_attrs
        self.directions = list(attrs.get("dnntune:directions") or [d.name.lower() for d in study.directions])
        default_names = ["value"] if len(self.directions) == 1 else [f"objective {i}" for i in
                                                                      range(len(self.directions))]
        self.names = list(attrs.get("dnntune:objectives") or default_names)
        self.experiment = attrs.get("dnntune:experiment")
        self.trials = study.get_trials(deepcopy=False)
        by = {s: [t for t in self.trials if t.state == s] for s in TrialState}
        self.complete = [t for t in by[TrialState.COMPLETE] if finite(t.values)]
        self.pruned = by[TrialState.PRUNED]
        self.failed = by[TrialState.FAIL]
        self.running = by[TrialState.RUNNING]
        self._curves: dict[int, list[tuple[int, float]]] = {}

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1

    @property
    def metric(self) -> str:
        return self.names[0]

    def sign(self, i: int = 0) -> int:
        """+1 when larger is better for objective ``i``."""
        return 1 if self.directions[i] == "maximize" else -1

    @cached_property
    def ranked(self) -> list[FrozenTrial]:
        """Complete trials, best first on the first objective (the study's own selection rule)."""
        return top_trials(self.complete, self.directions[:1])

    @cached_property
    def pareto(self) -> list[FrozenTrial]:
        if not self.multi or not self.complete:
            return []
        return [t for t in self.study.best_trials if finite(t.values)]

    @cached_property
    def best(self) -> FrozenTrial | None:
        """The study's best trial, chosen as the run chose it (:mod:`dnntune.search.selection`), so the report
        names the trial whose recipe was retrained; a pruned one when no trial completed."""
        return best_trial(self.trials, self.directions)

    def value(self, trial: FrozenTrial) -> float:
        """A trial's value on the first objective (a pruned trial: its best reported value)."""
        return trial_value(trial, self.directions[0])

    @cached_property
    def params(self) -> list[str]:
        """Parameter names in order of first appearance over the complete (else all) trials."""
        seen: dict[str, None] = {}
        for t in self.complete or self.trials:
            for k in t.params:
                seen.setdefault(k)
        return list(seen)

    def distribution(self, name: str):
        for t in self.complete or self.trials:
            if name in t.distributions:
                return t.distributions[name]
        return None

    def last_value(self, t: FrozenTrial) -> float | None:
        """A pruned trial's last reported value of the first objective."""
        if t.values and finite(t.values[:1]):
            return t.values[0]
        if t.intermediate_values:
            v = t.intermediate_values[max(t.intermediate_values)]
            return v if math.isfinite(v) else None
        curve = self.curve(t)
        return curve[-1][1] if curve else None

    def trial_dir(self, t: FrozenTrial) -> Path | None:
        if self.run_dir is not None:
            d = self.run_dir / "trials" / f"{t.number:04d}"
            if d.is_dir():
                return d
        d = t.user_attrs.get("dir")
        if d and Path(d).is_dir():
            return Path(d)
        return None

    def curve(self, t: FrozenTrial) -> list[tuple[int, float]]:
        """Validation value of the first objective per epoch: the trial's reports, else its curves.jsonl."""
        if t.intermediate_values:
            return sorted((int(k), float(v)) for k, v in t.intermediate_values.items() if math.isfinite(v))
        return self._curve_file(t.number, t)

    def _curve_file(self, number: int, t: FrozenTrial) -> list[tuple[int, float]]:
        if number in self._curves:
            return self._curves[number]
        out: list[tuple[int, float]] = []
        d = self.trial_dir(t)
        key = f"val_{self.metric}"
        if d is not None and (d / "curves.jsonl").is_file():
            for line in (d / "curves.jsonl").read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                v = row.get(key)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    out.append((int(row.get("epoch", len(out) + 1)), float(v)))
        self._curves[number] = out
        return out

    def owner(self, t: FrozenTrial) -> str:
        info = t.system_attrs.get(OWNER_KEY)
        if isinstance(info, dict) and "pid" in info:
            return f"{info.get('host', '?')}:{info['pid']}"
        return "unknown"

    def seconds(self, t: FrozenTrial) -> float | None:
        s = t.user_attrs.get("wall_seconds")
        if isinstance(s, (int, float)):
            return float(s)
        if t.datetime_start and t.datetime_complete:
            return (t.datetime_complete - t.datetime_start).total_seconds()
        return None

    def _json(self, *parts: str) -> dict | None:
        if self.run_dir is None:
            return None
        p = self.run_dir.joinpath(*parts)
        try:
            return json.loads(p.read_text()) if p.is_file() else None
        except (OSError, ValueError):
            return None

    @cached_property
    def run_summary(self) -> dict | None:
        """``RUN_DIR/summary.json`` written by ``dnntune tune`` (None without a run folder)."""
        s = self._json("summary.json")
        return s if s and s.get("study") in (None, self.study.study_name) else None

    @cached_property
    def test_metrics(self) -> tuple[dict, str] | None:
        """Final test metrics of the best recipe and where they came from."""
        best = self._json("best", "summary.json")
        test = ((best or {}).get("metrics") or {}).get("test")
        if test:
            return test, "best/summary.json"
        test = (self.run_summary or {}).get("test")
        if test:
            return test, "summary.json"
        return None

    @cached_property
    def class_names(self) -> list[str] | None:
        """The class names of the final model (best/summary.json), for the confusion matrix's axes."""
        names = (self._json("best", "summary.json") or {}).get("class_names")
        return [str(n) for n in names] if isinstance(names, list) else None

    @cached_property
    def best_recipe(self) -> tuple[str, str] | None:
        """The best recipe as YAML and where it came from."""
        if self.run_dir is not None and (self.run_dir / "best" / "recipe.yaml").is_file():
            return (self.run_dir / "best" / "recipe.yaml").read_text(), "best/recipe.yaml (the final retrain)"
        if self.best is not None and isinstance(self.best.user_attrs.get("recipe"), dict):
            import yaml

            return (yaml.safe_dump(self.best.user_attrs["recipe"], sort_keys=False),
                    f"trial {self.best.number} in the study storage")
        return None
