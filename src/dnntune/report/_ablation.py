"""The ablation's results rendered: Markdown, CSV, JSON, the bar chart, every row's recipe and the terminal table.

The numbers come from :mod:`dnntune.ablation` (which trains the rows); nothing here trains or computes them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import yaml

from ..ablation import PERCENT_METRICS, AblationResult, AblationSpec, Row, describe_change, metric_interval, table_rows


def metric_format(metric: str) -> Callable[[float | None], str]:
    """How a value of ``metric`` is shown: shares as percent with one decimal, others to 4 digits."""
    scale = 100.0 if metric in PERCENT_METRICS else 1.0

    def f(x: float | None, signed: bool = False) -> str:
        if x is None or not math.isfinite(x):
            return "–"
        return f"{x * scale:+.1f}" if signed and scale == 100 else (
            f"{x * scale:.1f}" if scale == 100 else (f"{x:+.4g}" if signed else f"{x:.4g}"))
    return f


def _fmt(result: AblationResult) -> Callable[[float], str]:
    return metric_format(result.metric)


def cells(result: AblationResult, d: dict) -> dict[str, str]:
    """Formatted cells of one table row: value ± std, [CI], bought [CI], for val and test."""
    f = _fmt(result)
    out = {}
    for s in ("val", "test"):
        out[s] = f"{f(d[f'{s}_mean'])} ± {f(d[f'{s}_std'])}"
        out[f"{s}_ci"] = f"[{f(d[f'{s}_ci_low'])}, {f(d[f'{s}_ci_high'])}]"
        out[f"{s}_bought"] = ("" if not math.isfinite(d[f"{s}_bought"]) else
                              f"{f(d[f'{s}_bought'], True)} [{f(d[f'{s}_bought_ci_low'], True)}, "
                              f"{f(d[f'{s}_bought_ci_high'], True)}]")
    return out


def markdown(result: AblationResult, title: str | None = None) -> str:
    """Both views as Markdown tables, with what the numbers mean."""
    spec = result.spec
    unit = " (%)" if result.metric in PERCENT_METRICS else ""
    rows = table_rows(result)
    seeds = ", ".join(map(str, spec.seeds))
    lines = [f"### {title}" if title else "### What each strategy bought", "",
             f"Baseline: {spec.baseline_source}. Best: {spec.best_source}. Metric: {result.metric}{unit}, "
             f"mean ± std over seeds {seeds} with the 95% confidence interval of the mean (t, n − 1 = "
             f"{len(spec.seeds) - 1}). *Bought*: paired difference over the same seeds, positive = the strategy "
             f"helped (cumulative: row − previous row; leave-one-out: best − row). **Validation** is for choices; "
             f"**test** is the final evaluation of each row's recipe, never used to choose.", ""]
    for view, heading in (("cumulative", "Cumulative: from the baseline, add one strategy at a time"),
                          ("leave_one_out", "Leave-one-out: from the best, revert one strategy at a time")):
        lines += [f"**{heading}**", "",
                  f"| row | val {result.metric} | val 95% CI | bought (val) | test {result.metric} | test 95% CI | "
                  f"bought (test) | epochs | s/run | what changed |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for d in rows:
            if d["view"] != view:
                continue
            c = cells(result, d)
            change = d["change"].replace("|", "\\|") + (f" ({d['failures']})" if d["failures"] else "")
            lines.append(f"| {d['row']} | {c['val']} | {c['val_ci']} | {c['val_bought']} | {c['test']} | "
                         f"{c['test_ci']} | {c['test_bought']} | {d['epochs_mean']:.0f} | {d['seconds_mean']:.1f} | "
                         f"{change} |")
        lines.append("")
    if result.unchanged:
        lines.append(f"Strategies the two recipes share (no row): {', '.join(result.unchanged)}.")
    data_note = _data_note(spec)
    if data_note:
        lines.append(data_note)
    n_runs = len({json.dumps(r.recipe, sort_keys=True) for r in result.rows()}) * len(spec.seeds)
    lines.append(f"{n_runs} training runs, {spec.workers} worker process(es), {result.wall_seconds:.0f} s wall.")
    return "\n".join(lines) + "\n"


def _data_note(spec: AblationSpec) -> str:
    a, b = spec.baseline.data, spec.best.data
    if a == b:
        return ""
    diff = describe_change(a.model_dump(mode="json"), b.model_dump(mode="json"))
    return f"Every row uses the best's data section (the baseline's differs: {diff})."


def write_csv(result: AblationResult, path: Path) -> None:
    rows = table_rows(result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for d in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in d.items()})
    path.write_text(buf.getvalue())


def plot(result: AblationResult, path: Path) -> None:
    """Horizontal bars per row (validation and test means) with 95% CI error bars, one panel per view."""
    from matplotlib.figure import Figure

    scale = 100.0 if result.metric in PERCENT_METRICS else 1.0
    views = (("cumulative", result.cumulative), ("leave-one-out", result.leave_one_out))
    height = 1.2 + 0.42 * (len(result.cumulative) + len(result.leave_one_out))
    fig = Figure(figsize=(8.0, height), dpi=110)
    axes = fig.subplots(2, 1, height_ratios=[len(result.cumulative), len(result.leave_one_out)])
    lows, highs = [], []
    for ax, (name, rows) in zip(axes, views):
        _panel(ax, name, rows, result.metric, scale, lows, highs)
    note = ""
    if lows:
        lo, hi = min(lows), max(highs)
        pad = max((hi - lo) * 0.1, 1e-6)
        lo, hi = lo - pad, hi + pad
        if scale == 100:  # a share: the axis stays within 0..100 %
            lo, hi = max(lo, 0.0), min(hi, 100.0)
        for ax in axes:
            ax.set_xlim(lo, hi)
        note = " (axis does not start at 0)" if lo > 0 else ""
    unit = " (%)" if scale == 100 else ""
    axes[-1].set_xlabel(f"{result.metric}{unit}: mean over {len(result.spec.seeds)} seeds, 95% CI{note}")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _panel(ax, name: str, rows: list[Row], metric: str, scale: float, lows: list[float], highs: list[float]) -> None:
    """One view's bars on ``ax``; the extent of its finite means and intervals is added to ``lows``/``highs``."""
    ys = list(range(len(rows)))[::-1]
    for j, (split_name, color) in enumerate((("val", "C0"), ("test", "C1"))):
        means, errs = [], [[], []]
        for row in rows:
            m, _, lo, hi, _ = metric_interval(getattr(row, split_name), metric)
            means.append(m * scale)
            errs[0].append((m - lo) * scale if math.isfinite(lo) else 0)
            errs[1].append((hi - m) * scale if math.isfinite(hi) else 0)
            if math.isfinite(m):
                lows.append((lo if math.isfinite(lo) else m) * scale)
                highs.append((hi if math.isfinite(hi) else m) * scale)
        offs = [y + (0.2 if j == 0 else -0.2) for y in ys]
        ax.barh(offs, means, height=0.38, xerr=errs, color=color, alpha=0.85, capsize=3,
                label="validation" if split_name == "val" else "test (final evaluation)")
    ax.set_yticks(ys, [r.label for r in rows], fontsize=8)
    ax.set_title(f"{name}", fontsize=9, loc="left")
    ax.grid(True, axis="x", alpha=0.3)


def write(result: AblationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ablation.md, ablation.csv, ablation.png, ablation.json and every row's recipe to ``out_dir``."""
    from ..engine.checkpoint import atomic_write_text, write_json

    out = Path(out_dir)
    (out / "recipes").mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "ablation.md", "csv": out / "ablation.csv", "png": out / "ablation.png",
             "json": out / "ablation.json"}
    atomic_write_text(paths["md"], markdown(result))
    write_csv(result, paths["csv"])
    plot(result, paths["png"])
    for i, row in enumerate(result.rows()):
        name = re.sub(r"[^a-z0-9]+", "-", f"{row.view} {i:02d} {row.strategy or row.label}".lower()).strip("-")
        atomic_write_text(out / "recipes" / f"{name}.yaml", f"# {row.view}: {row.label}\n" +
                          yaml.safe_dump(row.recipe, sort_keys=False))
    spec = result.spec
    write_json(paths["json"], {
        "metric": result.metric, "direction": result.direction, "seeds": spec.seeds, "workers": spec.workers,
        "baseline": spec.baseline_source, "best": spec.best_source, "strategies": spec.strategies,
        "unchanged": result.unchanged, "wall_seconds": round(result.wall_seconds, 2),
        "rows": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
                 for d in table_rows(result)]})
    return paths


def print_table(result: AblationResult, console) -> None:
    """Both views as compact rich tables: mean ± std, ± the 95% CI half-width (t), and what the strategy bought."""
    from rich import box
    from rich.table import Table

    f = _fmt(result)
    unit = " %" if result.metric in PERCENT_METRICS else ""
    for view, title in (("cumulative", "cumulative: baseline + one strategy at a time (last row = best)"),
                        ("leave_one_out", "leave-one-out: best − one strategy at a time")):
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        t.add_column("row", no_wrap=True)
        for col in (f"val{unit}", "CI95 ±", "bought", f"test{unit}", "CI95 ±", "bought"):
            t.add_column(col, justify="right", no_wrap=True)
        for d in table_rows(result):
            if d["view"] != view:
                continue
            row = [d["row"].replace(" (= best)", "") + (" [red]![/red]" if d["failures"] else "")]
            for s in ("val", "test"):
                half = (d[f"{s}_ci_high"] - d[f"{s}_ci_low"]) / 2
                row += [f"{f(d[f'{s}_mean'])}±{f(d[f'{s}_std'])}", f(half), f(d[f"{s}_bought"], True)
                        if math.isfinite(d[f"{s}_bought"]) else ""]
            t.add_row(*row)
        console.print(t)
    console.print(f"{len(result.spec.seeds)} seeds; validation is for choices, test is the final evaluation; "
                  f"bought = paired gain (cumulative: vs the row above; leave-one-out: best vs the row); "
                  f"{result.wall_seconds:.0f} s")
