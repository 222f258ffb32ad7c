"""Assemble the study report: figures (PNG files + embedded copies), tables, the best recipe, test metrics."""

from __future__ import annotations

import collections
import datetime
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from ..config import SearchSection
from . import _html as h
from ._source import ReportError
from ._view import FAIL_REASON, StudyView

REPORT_NAME = "index.html"
TOP_TRIALS = 15
MAX_FAILED_ROWS = 100
# (anchor, title) in page order; figures that may be missing say why in their place
SECTIONS = (("summary", "Summary"), ("history", "Optimization history"), ("importance", "Parameter importance"),
            ("parallel", "Parallel coordinates"), ("slices", "Slice plots"), ("curves", "Learning curves"),
            ("timeline", "Timeline"), ("top", "Top trials"), ("failed", "Failed trials"),
            ("recipe", "Best recipe"), ("test", "Final test metrics"), ("ablation", "What each strategy bought"))
ABLATION_DIR = "ablation"  # `dnntune ablate RUN_DIR` writes here; the report shows it when present
FIGURE_FILES = ("history", "pareto", "importance", "parallel", "slices", "curves", "timeline", "confusion")


@dataclass
class Report:
    """Where the report went and what it could not show."""

    path: Path
    figures: list[Path] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # set when the report is partial (no complete trial)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "figures": [str(p) for p in self.figures], "missing": self.missing,
                "problem": self.problem, "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def _fmt(x, digits: int = 4) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}g}" if math.isfinite(x) else str(x)
    return h.esc(x)


class _Builder:
    def __init__(self, view: StudyView, out_dir: Path, on_step: Callable[[str], None] | None):
        self.v = view
        self.out = out_dir
        self.on_step = on_step or (lambda name: None)
        self.report = Report(out_dir / REPORT_NAME)
        self.importance: dict[str, float] | None = None

    def figure(self, name: str, draw: Callable, alt: str, caption: str = "") -> str:
        from ._figures import Missing, png

        t0 = time.perf_counter()
        try:
            fig = draw()
        except Missing as e:
            self.report.missing[name] = str(e)
            return h.missing(str(e))
        data = png(fig)
        path = self.out / f"{name}.png"
        path.write_bytes(data)
        self.report.figures.append(path)
        self.report.seconds[name] = time.perf_counter() - t0
        return h.img(data, alt, caption)

    # --- sections ---------------------------------------------------------------------------------
    def summary(self) -> str:
        v = self.v
        c = collections.Counter(t.state.name for t in v.trials)
        counts = ", ".join(f"{c[s]} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
                           if c[s] or s in ("COMPLETE", "PRUNED", "FAIL"))
        rows = [("study", h.esc(v.study.study_name)), ("storage", h.esc(v.storage or "(in memory)")),
                ("objectives", ", ".join(f"{h.esc(n)} ({d})" for n, d in zip(v.names, v.directions))),
                ("trials", f"{len(v.trials)}: {counts}")]
        exp = v.experiment or {}
        search = exp.get("search") or {}
        if exp:
            data = (exp.get("data") or {}).get("name")
            rows.append(("data", h.esc(data)))
            section = SearchSection(**search)
            rows.append(("search", h.esc(f"sampler {section.sampler}, pruner {'none' if v.multi else section.pruner}")))
        if v.best is not None:
            values = v.best.values or [v.value(v.best)]
            vals = ", ".join(f"{n} {_fmt(x)}" for n, x in zip(v.names, values))
            pruned = "" if v.best.values else " (pruned: no trial completed; its best reported value)"
            rows.append(("best trial", f"{v.best.number}: val {vals}{pruned}"))
        epochs = sum(int(t.user_attrs.get("epochs", 0) or 0) for t in v.trials)
        if epochs:
            rows.append(("epochs trained", f"{epochs} over all trials"))
        wall = (v.run_summary or {}).get("wall_seconds")
        starts = [t.datetime_start for t in v.trials if t.datetime_start]
        ends = [t.datetime_complete for t in v.trials if t.datetime_complete]
        if wall is None and starts and ends:
            wall = (max(ends) - min(starts)).total_seconds()
        if wall is not None:
            rows.append(("wall time", f"{wall:.0f} s"))
        warm = [t for t in v.trials if t.user_attrs.get("warm_start_from")]
        if warm:  # search.warm_start: recipes of earlier studies, run first
            rows.append(("warm start", h.esc(_warm_sentence(v, warm))))
        if v.pareto:
            rows.append(("Pareto front", f"{len(v.pareto)} trials: "
                                         + ", ".join(str(t.number) for t in sorted(v.pareto, key=lambda t: t.number))))
        problem = f'<p class="problem">{h.esc(self.report.problem)}</p>' if self.report.problem else ""
        return problem + h.meta(rows)

    def history(self) -> str:
        from . import _figures as f

        out = self.figure("history", lambda: f.history(self.v), "optimization history",
                          "Each point is a trial's final validation value; pruned trials show their last reported "
                          "value; the line is the best so far.")
        if self.v.multi and len(self.v.names) >= 2:
            out += self.figure("pareto", lambda: f.pareto(self.v), "Pareto front",
                               "All complete trials on the first two objectives; the front in red.")
        return out

    def importance_section(self) -> str:
        from . import _figures as f

        t0 = time.perf_counter()
        try:
            self.importance = f.importances(self.v)
        except f.Missing as e:
            self.report.missing["importance"] = str(e)
            return h.missing(str(e))
        self.report.seconds["importance_eval"] = time.perf_counter() - t0
        return self.figure("importance", lambda: f.importance(self.v, self.importance), "parameter importance",
                           "Optuna's PED-ANOVA: how much each parameter's distribution differs between the top "
                           "trials and all complete trials. Conditional parameters (*) are assessed within the "
                           "trials that have them.")

    def top(self) -> str:
        v = self.v
        if not v.ranked:
            self.report.missing["top"] = "no complete trial"
            return h.missing("no complete trial")
        front = {t.number for t in v.pareto}
        header = ["rank", "trial"] + [f"val {n}" for n in v.names] + (["front"] if v.multi else []) + \
            ["epochs", "best epoch", "seconds", "params"]
        rows = []
        folds = 0
        for i, t in enumerate(v.ranked[:TOP_TRIALS]):
            secs = v.seconds(t)
            cells = [_fmt(x) for x in t.values]
            per_fold = [x for x in t.user_attrs.get("folds") or [] if x is not None]
            if len(per_fold) > 1:  # cross-validated: the mean over folds ± their spread
                folds = max(folds, len(per_fold))
                cells[0] += f" ± {_fmt(statistics.stdev(per_fold))}"
            number = str(t.number) + (f' <span title="warm start from {h.esc(t.user_attrs["warm_start_from"])}">'
                                      '(warm start)</span>' if t.user_attrs.get("warm_start_from") else "")
            rows.append([str(i + 1), number] + cells
                        + (["✓" if t.number in front else ""] if v.multi else [])
                        + [_fmt(t.user_attrs.get("epochs", "")), _fmt(t.user_attrs.get("best_epoch") or ""),
                           "" if secs is None else f"{secs:.1f}", h.params_cell(t.params)])
        k = len(v.names)
        numeric = {0, 1, *range(2, 2 + k), 2 + k + v.multi, 3 + k + v.multi, 4 + k + v.multi}
        note = f"<p>The {min(TOP_TRIALS, len(v.ranked))} best of {len(v.ranked)} complete trials by val {v.metric}"
        note += (f" (mean over {folds} cross-validation folds ± their standard deviation)." if folds else ".") + "</p>"
        return note + h.table(header, rows, numeric)

    def failed(self) -> str:
        v = self.v
        if not v.failed:
            return "<p>No trial failed.</p>"
        reasons = collections.Counter(t.user_attrs.get(FAIL_REASON, "unknown (no reason recorded)") for t in v.failed)
        summary = h.table(["reason", "trials"], [[f'<span class="reason">{h.esc(r)}</span>', str(n)]
                                                 for r, n in reasons.most_common()], {1})
        rows = []
        for t in v.failed[:MAX_FAILED_ROWS]:
            secs = v.seconds(t)
            rows.append([str(t.number), f'<span class="reason">{h.esc(t.user_attrs.get(FAIL_REASON, "unknown"))}'
                                        f"</span>", "" if secs is None else f"{secs:.1f}", h.params_cell(t.params)])
        more = f"<p>… and {len(v.failed) - MAX_FAILED_ROWS} more.</p>" if len(v.failed) > MAX_FAILED_ROWS else ""
        return (f"<p>{len(v.failed)} failed trial(s), by reason:</p>" + summary
                + h.table(["trial", "reason", "seconds", "params"], rows, {0, 2}) + more)

    def recipe(self) -> str:
        found = self.v.best_recipe
        if found is None:
            reason = ("no complete trial, so no best recipe" if self.v.best is None else
                      f"the best trial ({self.v.best.number}) carries no recipe and the run folder has no "
                      f"best/recipe.yaml")
            self.report.missing["recipe"] = reason
            return h.missing(reason)
        text, where = found
        return (f"<p>From {h.esc(where)}; train it with <code>dnntune train recipe.yaml</code>.</p>"
                f"<pre>{h.esc(text)}</pre>")

    def test(self) -> str:
        from . import _figures as f

        found = self.v.test_metrics
        if found is None:
            reason = ("no final test of the best recipe in the run folder (best/summary.json)"
                      if self.v.run_dir is not None else "no run folder given, so no final test metrics")
            self.report.missing["test"] = reason
            return h.missing(reason)
        test, where = found
        scalars = [(k, x) for k, x in test.items() if isinstance(x, (int, float)) and not isinstance(x, bool)]
        out = (f"<p>The best recipe, retrained and evaluated once on the test split ({h.esc(where)}).</p>"
               + h.table([k for k, _ in scalars], [[_fmt(x) for _, x in scalars]], set(range(len(scalars)))))
        if test.get("confusion_matrix"):
            out += self.figure("confusion", lambda: f.confusion(test["confusion_matrix"], self.v.class_names),
                               "test confusion matrix",
                               "Rows: true class, columns: predicted class; colour: share of the true class.")
        if isinstance(test.get("per_label"), dict):  # multi-label: a table per label instead of a confusion matrix
            out += self.per_label(test["per_label"])
        return out

    def per_label(self, table: dict) -> str:
        """Multi-label test metrics per label: F1, precision, recall, support and the decision threshold."""
        best = self.v._json("best", "summary.json") or {}
        pre = self.v._json("best", "preprocess.json") or {}
        k = len(table.get("f1") or [])
        names = pre.get("class_names") if len(pre.get("class_names") or []) == k else [str(i) for i in range(k)]
        cols = ("f1", "precision", "recall", "support", "threshold")
        rows = [[h.esc(names[i])] + [_fmt((table.get(c) or [""] * k)[i]) for c in cols] for i in range(k)]
        where = (best.get("thresholds") or {}).get("from")
        note = (f"<p>Per label on the test split: a label is predicted when its sigmoid probability is at least its "
                f"threshold, chosen to maximize that label's F1 on {h.esc(where or 'the validation split')} (never on "
                f"test data); support = positive test samples. Multi-label runs have no confusion matrix.</p>")
        return note + h.table(["label", *cols], rows, set(range(1, len(cols) + 1)))

    def ablation(self) -> str:
        import json

        run_dir = self.v.run_dir
        found = Path(run_dir) / ABLATION_DIR / "ablation.json" if run_dir is not None else None
        if found is None or not found.is_file():
            where = f"<code>dnntune ablate {h.esc(run_dir)}</code>" if run_dir is not None else \
                "<code>dnntune ablate RUN_DIR</code>"
            return (f"<p>No ablation yet: {where} trains the path from the seed articles' baseline to this study's "
                    f"best recipe, one strategy at a time, over seeds, and adds it here.</p>")
        try:
            data = json.loads(found.read_text())
            rows = data["rows"]
        except (OSError, ValueError, KeyError) as e:
            self.report.missing["ablation"] = f"{found} is unreadable: {e}"
            return h.missing(f"{found} is unreadable: {e}")
        from ._ablation import PERCENT_METRICS, metric_format

        pct = data.get("metric") in PERCENT_METRICS
        f = metric_format(data.get("metric", ""))

        out = (f"<p>From {h.esc(data.get('baseline'))} to {h.esc(data.get('best'))}; {h.esc(data.get('metric'))}"
               f"{' (%)' if pct else ''}, mean ± std over seeds {h.esc(data.get('seeds'))}, 95% confidence interval "
               f"of the mean; <i>bought</i> is the paired gain over the same seeds (positive = the strategy helped). "
               f"Validation is for choices; test is each row's final evaluation.</p>")
        png = found.with_name("ablation.png")
        if png.is_file():
            out += h.img(png.read_bytes(), "ablation bar chart", "Validation and test means with 95% CIs.")
        for view, title in (("cumulative", "Cumulative: from the baseline, add one strategy at a time"),
                            ("leave_one_out", "Leave-one-out: from the best, revert one strategy at a time")):
            body = [[h.esc(d["row"]), f"{f(d['val_mean'])} ± {f(d['val_std'])}",
                     f"[{f(d['val_ci_low'])}, {f(d['val_ci_high'])}]", f(d.get("val_bought"), True),
                     f"{f(d['test_mean'])} ± {f(d['test_std'])}", f(d.get("test_bought"), True), h.esc(d["change"])]
                    for d in rows if d["view"] == view]
            if body:
                out += f"<p><b>{title}</b></p>" + h.table(
                    ["row", "val", "val 95% CI", "bought (val)", "test", "bought (test)", "what changed"], body,
                    {1, 2, 3, 4, 5})
        return out

    # --- the page ---------------------------------------------------------------------------------
    def build(self) -> Report:
        from . import _figures as f

        v = self.v
        parts: dict[str, str] = {}
        steps: list[tuple[str, Callable[[], str]]] = [
            ("history", self.history),
            ("importance", self.importance_section),
            ("parallel", lambda: self.figure("parallel", lambda: f.parallel(v, self._order()), "parallel coordinates",
                                             "Each line is a complete trial, coloured by its validation value "
                                             "(bright = better); categorical axes list their choices.")),
            ("slices", lambda: self.figure("slices", lambda: f.slices(v, self._order()), "slice plots")),
            ("curves", lambda: self.figure("curves", lambda: f.curves(v), "learning curves",
                                           "Validation value per epoch; a cross marks where a pruned trial stopped.")),
            ("timeline", lambda: self.figure("timeline", lambda: f.timeline(v), "timeline of trials per worker",
                                             "One row per worker process (owner pid); bars coloured by state.")),
            ("top", self.top), ("failed", self.failed), ("recipe", self.recipe), ("test", self.test),
            ("ablation", self.ablation),
        ]
        for name, fn in steps:
            self.on_step(name)
            t0 = time.perf_counter()
            parts[name] = fn()
            self.report.seconds.setdefault(name, time.perf_counter() - t0)
        self.on_step("summary")
        parts["summary"] = self.summary()
        body = "\n".join(h.section(a, t, parts[a]) for a, t in SECTIONS)
        from .. import __version__

        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        footer = (f"dnntune {__version__} · Optuna {optuna.__version__} · generated {stamp}. Self-contained: the "
                  f"figures are embedded; PNG copies are beside this file.")
        html = h.page(f"dnntune report: {v.study.study_name}", list(SECTIONS), body, footer)
        self.report.path.write_text(html, encoding="utf-8")
        return self.report

    def _order(self) -> list[str] | None:
        return list(self.importance) + [p for p in self.v.params if p not in self.importance] \
            if self.importance else None


def _warm_sentence(v: StudyView, warm: list) -> str:
    """'N warm-start trials from SOURCE, best reached by trial #k' (k: the best trial, warm-start or not)."""
    sources = sorted({str(t.user_attrs["warm_start_from"]).rpartition("#")[0] for t in warm})
    best = "" if v.best is None else f", best reached by trial #{v.best.number}" + (
        " (a warm-start trial)" if v.best.user_attrs.get("warm_start_from") else "")
    return f"{len(warm)} warm-start trial{'s' * (len(warm) != 1)} from {', '.join(sources)}{best}"


def _problem(v: StudyView) -> str | None:
    if v.complete:
        return None
    c = collections.Counter(t.state.name for t in v.trials)
    if v.failed:
        reasons = collections.Counter(t.user_attrs.get(FAIL_REASON, "unknown") for t in v.failed)
        (reason, n), = reasons.most_common(1)
        return (f"no trial of study {v.study.study_name!r} completed: {c['FAIL']} failed, {c['PRUNED']} pruned, "
                f"{c['RUNNING']} running; most common failure: {reason}"
                + (f" ({n} of {len(v.failed)})" if n < len(v.failed) else ""))
    return (f"no trial of study {v.study.study_name!r} completed yet: {c['PRUNED']} pruned, {c['RUNNING']} running, "
            f"{c['WAITING']} waiting")


def build_report(study: optuna.Study, out_dir: str | Path, run_dir: str | Path | None = None, storage: str = "",
                 on_step: Callable[[str], None] | None = None) -> Report:
    """Write ``out_dir/index.html`` (self-contained) and the figures as PNG files beside it.

    A study without any complete trial gets a partial report (the failure table and the reasons) and
    ``Report.problem`` says so; a study without any trial is a :class:`ReportError`.

    Example:
        >>> import tempfile
        >>> import optuna
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=20)
        >>> build_report(study, tempfile.mkdtemp()).path.name
        'index.html'
    """
    view = StudyView(study, run_dir, storage)
    if not view.trials:
        raise ReportError(f"study {study.study_name!r}{f' in {storage}' if storage else ''} has no trials yet: "
                          f"nothing to report (run `dnntune tune` first)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in FIGURE_FILES:  # a figure of an earlier report that is missing now must not linger
        (out / f"{name}.png").unlink(missing_ok=True)
    builder = _Builder(view, out, on_step)
    builder.report.problem = _problem(view)
    return builder.build()
