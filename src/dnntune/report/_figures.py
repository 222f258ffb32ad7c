"""The report's figures, drawn with matplotlib's object API (Agg canvas; no pyplot, no global state).

Each function takes a :class:`StudyView` and returns a ``Figure``, or raises :class:`Missing` with
the reason the figure cannot be drawn (the report prints that reason in its place).
"""

from __future__ import annotations

import io
import math
import warnings
from datetime import datetime

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from ._view import StudyView

DPI = 96
MIN_IMPORTANCE_TRIALS = 10
MAX_PARALLEL_PARAMS = 12
MAX_SLICE_PARAMS = 24
TOP_CURVES = 8
STATE_COLORS = {"COMPLETE": "#2b6cb0", "PRUNED": "#dd8a2e", "FAIL": "#c53030", "RUNNING": "#8a94a6",
                "WAITING": "#cbd2dc"}
BEST_COLOR = "#c53030"
# top trials' curves: no orange (pruned) and no red (best-so-far) among them
TOP_COLORS = ("#2b6cb0", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#1a365d", "#975a16", "#4a5568")


class Missing(Exception):
    """A figure that cannot be drawn; the message says why."""


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _objective_label(v: StudyView, i: int = 0) -> str:
    arrow = "↑" if v.sign(i) > 0 else "↓"
    return f"val {v.names[i]} ({arrow} better)" if i == 0 and v.study.user_attrs.get("dnntune:objectives") \
        else f"{v.names[i]} ({arrow} better)"


# --- optimization history and Pareto front -----------------------------------------------------------


def history(v: StudyView) -> Figure:
    pruned = [(t.number, v.last_value(t)) for t in v.pruned]
    pruned = [(n, y) for n, y in pruned if y is not None]
    if not v.complete and not pruned:
        raise Missing("no complete trial and no pruned trial with a reported value")
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if pruned:
        ax.scatter(*zip(*pruned), s=16, marker="x", color=STATE_COLORS["PRUNED"], alpha=0.7,
                   label=f"pruned, last reported value ({len(pruned)})")
    if v.complete:
        done = sorted(v.complete, key=lambda t: t.number)
        xs = [t.number for t in done]
        ys = [t.values[0] for t in done]
        ax.scatter(xs, ys, s=20, color=STATE_COLORS["COMPLETE"], label=f"complete ({len(done)})", zorder=3)
        best = (np.maximum if v.sign() > 0 else np.minimum).accumulate(np.array(ys))
        last = max(t.number for t in v.trials)
        ax.step(xs + [last], list(best) + [best[-1]], where="post", color=BEST_COLOR, lw=1.8, label="best so far",
                zorder=4)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_objective_label(v))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("optimization history" + (f" (first objective: {v.names[0]})" if v.multi else ""), fontsize=11)
    return fig


def pareto(v: StudyView) -> Figure:
    if len(v.complete) < 2:
        raise Missing(f"needs at least 2 complete trials, the study has {len(v.complete)}")
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    front = {t.number for t in v.pareto}
    rest = [t for t in v.complete if t.number not in front]
    if rest:
        ax.scatter([t.values[0] for t in rest], [t.values[1] for t in rest], s=18, color="#a0aec0",
                   label="dominated")
    f = sorted(v.pareto, key=lambda t: t.values[0])
    ax.plot([t.values[0] for t in f], [t.values[1] for t in f], "-o", color=BEST_COLOR, ms=5,
            label=f"Pareto front ({len(f)})")
    for t in f:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel(_objective_label(v, 0))
    ax.set_ylabel(_objective_label(v, 1))
    if v.names[1] == "params":
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Pareto front: {v.names[0]} vs {v.names[1]} (labels: trial numbers)", fontsize=11)
    return fig


# --- parameter importance -------------------------------------------------------------------------


def importances(v: StudyView) -> dict[str, float]:
    """PED-ANOVA importances (conditional parameters are assessed within the trials that have them)."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    n = len(v.complete)
    if n < MIN_IMPORTANCE_TRIALS:
        raise Missing(f"parameter importance needs at least {MIN_IMPORTANCE_TRIALS} complete trials; the study has "
                      f"{n} (pruned and failed trials carry no final value)")
    varying = [p for p in v.params if len({repr(t.params[p]) for t in v.complete if p in t.params}) > 1]
    if not varying:
        raise Missing("no parameter takes more than one value among the complete trials")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            imp = get_param_importances(v.study, evaluator=PedAnovaImportanceEvaluator(), params=varying)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            raise Missing(f"Optuna could not compute importances: {e}") from None
    for w in caught:
        if "equal" in str(w.message):
            raise Missing(f"too few complete trials to separate the top ones from the rest ({n}): "
                          f"{str(w.message).strip()}")
    return imp


def importance(v: StudyView, imp: dict[str, float]) -> Figure:
    items = list(imp.items())[:20][::-1]
    fig = Figure(figsize=(9, 0.32 * len(items) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    conditional = {p for p in imp if any(p not in t.params for t in v.complete)}
    colors = ["#805ad5" if p in conditional else "#2b6cb0" for p, _ in items]
    ax.barh([p + (" *" if p in conditional else "") for p, _ in items], [x for _, x in items], color=colors)
    for i, (_, x) in enumerate(items):
        ax.text(x, i, f" {x:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (PED-ANOVA, normalized to sum 1)")
    target = "reaching the Pareto front" if v.multi else f"reaching the top 10% of val {v.metric}"
    ax.set_title(f"parameter importance for {target}" + ("   (* conditional)" if conditional else ""),
                 fontsize=11)
    ax.set_xlim(0, max(x for _, x in items) * 1.15 or 1)
    ax.grid(axis="x", alpha=0.3)
    return fig


# --- parallel coordinates and slices --------------------------------------------------------------------


def _axis(v: StudyView, name: str, trials):
    """(map value → [0, 1] or nan, tick labels [(pos, text)], log?) for one parameter."""
    from optuna.distributions import CategoricalDistribution

    dist = v.distribution(name)
    if isinstance(dist, CategoricalDistribution):
        choices = [repr(c) if not isinstance(c, str) else c for c in dist.choices]
        n = len(choices)
        pos = {c: (i / (n - 1) if n > 1 else 0.5) for i, c in enumerate(choices)}

        def cat(x):
            return pos.get(x if isinstance(x, str) else repr(x), math.nan)

        return cat, [(pos[c], c[:14]) for c in choices][:10], False
    values = [float(t.params[name]) for t in trials if name in t.params]
    log = bool(getattr(dist, "log", False)) and values and min(values) > 0
    tr = math.log10 if log else float
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    a, b = tr(lo), tr(hi)

    def num(x):
        return (tr(float(x)) - a) / (b - a) if b > a else 0.5

    return num, [(0.0, fmt(lo)), (1.0, fmt(hi))] if b > a else [(0.5, fmt(lo))], log


def parallel(v: StudyView, order: list[str] | None) -> Figure:
    from matplotlib.collections import LineCollection

    trials = v.complete
    if len(trials) < 2:
        raise Missing(f"needs at least 2 complete trials, the study has {len(trials)}")
    names = [p for p in (order or v.params) if p in v.params][:MAX_PARALLEL_PARAMS]
    if not names:
        raise Missing("the study has no parameters")
    axes = [_axis(v, p, trials) for p in names]
    vals = np.array([t.values[0] for t in trials])
    lo, hi = float(vals.min()), float(vals.max())
    norm = Normalize(lo, hi if hi > lo else lo + 1)
    cmap = "viridis" if v.sign() > 0 else "viridis_r"
    fig = Figure(figsize=(min(3 + 1.05 * (len(names) + 1), 16), 5.2), layout="constrained")
    ax = fig.add_subplot()
    segments, colors = [], []
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    for t in sorted(trials, key=lambda t: v.sign() * t.values[0]):  # best drawn last, on top
        ys = [f(t.params[p]) if p in t.params else math.nan for p, (f, _, _) in zip(names, axes)]
        ys.append(float(norm(t.values[0])))
        pts = [(i, y) for i, y in enumerate(ys)]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if math.isfinite(y0) and math.isfinite(y1):
                segments.append([(x0, y0), (x1, y1)])
                colors.append(cm(norm(t.values[0])))
    ax.add_collection(LineCollection(segments, colors=colors, linewidths=1.1, alpha=0.75))
    for i, (_, ticks, _log) in enumerate(axes):
        ax.axvline(i, color="#4a5568", lw=0.8)
        for y, text in ticks:
            ax.text(i + 0.04, y, text, fontsize=7, va="center", ha="left",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    k = len(names)
    ax.axvline(k, color="#4a5568", lw=0.8)
    for y, value in ((0.0, lo), (1.0, hi)) if hi > lo else ((0.0, lo),):
        ax.text(k + 0.04, y, fmt(value), fontsize=7, va="center", ha="left",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.set_xlim(-0.2, k + 0.5)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    ax.set_xticks(range(k + 1))
    labels = [p + (" (log)" if axes[i][2] else "") for i, p in enumerate(names)] + [f"val {v.metric}"]
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=_objective_label(v), pad=0.01)
    more = len(v.params) - len(names)
    ax.set_title(f"parallel coordinates of the {len(trials)} complete trials"
                 + (f" ({len(names)} most important of {len(v.params)} parameters)" if more > 0 else ""),
                 fontsize=11)
    return fig


def slices(v: StudyView, order: list[str] | None) -> Figure:
    from optuna.distributions import CategoricalDistribution

    trials = v.complete
    if not trials:
        raise Missing("no complete trial")
    names = [p for p in (order or v.params) if p in v.params][:MAX_SLICE_PARAMS]
    if not names:
        raise Missing("the study has no parameters")
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(3.1 * ncols + 0.8, 2.5 * nrows + 0.5), layout="constrained")
    axs = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    rng = np.random.default_rng(0)
    n_max = max(t.number for t in v.trials) or 1
    for i, name in enumerate(names):
        ax = axs[i // ncols][i % ncols]
        have = [t for t in trials if name in t.params]
        ys = [t.values[0] for t in have]
        c = [t.number for t in have]
        dist = v.distribution(name)
        if isinstance(dist, CategoricalDistribution):
            choices = [c_ if isinstance(c_, str) else repr(c_) for c_ in dist.choices]
            idx = {ch: j for j, ch in enumerate(choices)}
            xs = [idx.get(t.params[name] if isinstance(t.params[name], str) else repr(t.params[name]), 0)
                  + rng.uniform(-0.15, 0.15) for t in have]
            ax.set_xticks(range(len(choices)))
            ax.set_xticklabels([ch[:10] for ch in choices], fontsize=7, rotation=20 if len(choices) > 3 else 0)
            ax.set_xlim(-0.5, len(choices) - 0.5)
        else:
            xs = [float(t.params[name]) for t in have]
            if getattr(dist, "log", False) and xs and min(xs) > 0:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of short log ranges overlap
            ax.tick_params(axis="x", labelsize=7)
        ax.scatter(xs, ys, c=c, cmap="Blues", vmin=-0.3 * n_max, vmax=n_max, s=14, edgecolors="#2c5282",
                   linewidths=0.3)
        if v.best is not None and name in v.best.params and v.best in have:
            j = have.index(v.best)
            ax.scatter([xs[j]], [ys[j]], marker="*", s=90, color=BEST_COLOR, zorder=3)
        ax.set_title(name + ("" if len(have) == len(trials) else f" ({len(have)} trials)"), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
        if i % ncols == 0:
            ax.set_ylabel(f"val {v.metric}", fontsize=8)
    for j in range(len(names), nrows * ncols):
        axs[j // ncols][j % ncols].set_visible(False)
    fig.suptitle(f"slice plots: val {v.metric} against each parameter (complete trials; darker = later trial; "
                 f"★ best)", fontsize=10)
    return fig


# --- learning curves, timeline, confusion matrix ----------------------------------------------------


def curves(v: StudyView) -> Figure:
    top = v.ranked[:TOP_CURVES] if not v.multi else sorted(v.pareto, key=lambda t: -v.sign() * t.values[0])[:TOP_CURVES]
    top_curves = [(t, v.curve(t)) for t in top]
    pruned_curves = [(t, v.curve(t)) for t in v.pruned]
    top_curves = [(t, c) for t, c in top_curves if c]
    pruned_curves = [(t, c) for t, c in pruned_curves if c]
    if not top_curves and not pruned_curves:
        raise Missing("no per-epoch validation values were recorded (trial reports or the trials' curves.jsonl)")
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (_t, c) in enumerate(pruned_curves):
        ax.plot(*zip(*c), color=STATE_COLORS["PRUNED"], lw=0.8, alpha=0.4,
                label=f"pruned ({len(pruned_curves)})" if i == 0 else None)
        ax.plot(*c[-1], "x", color=STATE_COLORS["PRUNED"], ms=4, alpha=0.7)
    for i, (t, c) in enumerate(top_curves):
        best = t is v.best or (v.best is not None and t.number == v.best.number)
        ax.plot(*zip(*c), color=TOP_COLORS[i % len(TOP_COLORS)], lw=2.4 if best else 1.4,
                marker="o" if len(c) < 30 else None, ms=3, zorder=3,
                label=f"trial {t.number}: {t.values[0]:.4g}" + (" (best)" if best else ""))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_objective_label(v))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    which = "Pareto-front" if v.multi else "top"
    pruned_text = f" and the {len(pruned_curves)} pruned ones" if pruned_curves else " (no trial was pruned)"
    ax.set_title(f"learning curves: the {len(top_curves)} {which} trials{pruned_text}", fontsize=11)
    return fig


def timeline(v: StudyView) -> Figure:
    trials = [t for t in v.trials if t.datetime_start is not None]
    if not trials:
        raise Missing("no trial has a start time")
    t0 = min(t.datetime_start for t in trials)
    now = datetime.now()
    owners = list(dict.fromkeys(v.owner(t) for t in sorted(trials, key=lambda t: t.datetime_start)))
    hosts = {o.split(":")[0] for o in owners if o != "unknown"}
    labels = [("pid " + o.split(":", 1)[1]) if len(hosts) == 1 and o != "unknown" else o for o in owners]
    row = {o: i for i, o in enumerate(owners)}
    bars: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for t in trials:
        end = t.datetime_complete or now
        start = (t.datetime_start - t0).total_seconds()
        width = max((end - t.datetime_start).total_seconds(), 1e-3)
        bars.setdefault((row[v.owner(t)], t.state.name), []).append((start, width))
    fig = Figure(figsize=(10, 1.3 + 0.42 * len(owners)), layout="constrained")
    ax = fig.add_subplot()
    shown = set()
    for (r, state), spans in sorted(bars.items()):
        ax.broken_barh(spans, (r - 0.35, 0.7), facecolors=STATE_COLORS.get(state, "#999999"), edgecolor="white",
                       linewidth=0.4, label=None if state in shown else state.lower())
        shown.add(state)
    if len(trials) <= 60:
        for t in trials:
            s = (t.datetime_start - t0).total_seconds()
            w = ((t.datetime_complete or now) - t.datetime_start).total_seconds()
            ax.text(s + w / 2, row[v.owner(t)], str(t.number), ha="center", va="center", fontsize=6, color="white")
    ax.set_yticks(range(len(owners)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first trial started")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(f"timeline: {len(trials)} trials on {len(owners)} worker process(es)", fontsize=11)
    return fig


def confusion(matrix, labels: list[str] | None = None) -> Figure:
    """The confusion matrix; ``labels``: the class names for the axes (else the class indices)."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.size == 0:
        raise Missing("the confusion matrix is not square")
    n = m.shape[0]
    size = min(3 + 0.45 * n, 9)
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.add_subplot()
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8 if n <= 10 else 6,
                        color="white" if share[i, j] > 0.5 else "#1a202c")
    ticks = range(n) if n <= 30 else range(0, n, max(1, n // 15))
    ax.set_xticks(list(ticks))
    ax.set_yticks(list(ticks))
    if labels is not None and len(labels) == n:
        names = [str(labels[i])[:16] for i in ticks]
        turn = max(map(len, names)) > 3
        ax.set_xticklabels(names, rotation=45 if turn else 0, ha="right" if turn else "center")
        ax.set_yticklabels(names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="share of the true class", shrink=0.8)
    ax.set_title(f"test confusion matrix ({int(m.sum())} examples; counts)", fontsize=11)
    return fig
