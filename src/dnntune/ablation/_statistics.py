"""Mean ± std and the 95% t-interval over seeds, what each strategy bought, and the table rows."""

from __future__ import annotations

import math
import statistics
from typing import Any

from ._plan import Row
from ._run import AblationResult

PERCENT_METRICS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro")


def metric_interval(values: list[float], metric: str) -> tuple[float, float, float, float, int]:
    """:func:`t_interval`, with a share's interval kept within 0..100 %."""
    mean, std, lo, hi, n = t_interval(values)
    if metric in PERCENT_METRICS:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    return mean, std, lo, hi, n


def t_interval(values: list[float]) -> tuple[float, float, float, float, int]:
    """(mean, std, ci_low, ci_high, n) over the finite values; 95% CI of the mean by Student's t."""
    from scipy import stats

    v = [x for x in values if math.isfinite(x)]
    n = len(v)
    if n == 0:
        return (math.nan,) * 4 + (0,)
    mean = statistics.fmean(v)
    if n < 2:
        return mean, math.nan, math.nan, math.nan, n
    std = statistics.stdev(v)
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half, n


def bought(row: Row, reference: Row, view: str, maximize: bool, split_name: str) -> list[float]:
    """Per-seed paired gains of the strategy of ``row`` (positive = it helped)."""
    a, b = getattr(row, split_name), getattr(reference, split_name)
    diffs = [x - y for x, y in zip(a, b)] if view == "cumulative" else [y - x for x, y in zip(a, b)]
    return [d if maximize else -d for d in diffs]


def _reference(result: AblationResult, row: Row) -> Row | None:
    if row.strategy is None:
        return None
    if row.view == "leave_one_out":
        return result.leave_one_out[0]
    return result.cumulative[result.cumulative.index(row) - 1]


def table_rows(result: AblationResult) -> list[dict]:
    """Every row of both views as flat data (the CSV columns)."""
    maximize = result.direction == "maximize"
    out = []
    for row in result.rows():
        d: dict[str, Any] = {"view": row.view, "row": row.label, "strategy": row.strategy or "", "change": row.change,
                             "seeds": len(row.val)}
        ref = _reference(result, row)
        for split_name in ("val", "test"):
            mean, std, lo, hi, n = metric_interval(getattr(row, split_name), result.metric)
            d.update({f"{split_name}_mean": mean, f"{split_name}_std": std, f"{split_name}_ci_low": lo,
                      f"{split_name}_ci_high": hi})
            if ref is not None:
                gm, _, glo, ghi, _ = t_interval(bought(row, ref, row.view, maximize, split_name))
                d.update({f"{split_name}_bought": gm, f"{split_name}_bought_ci_low": glo,
                          f"{split_name}_bought_ci_high": ghi})
            else:
                d.update({f"{split_name}_bought": math.nan, f"{split_name}_bought_ci_low": math.nan,
                          f"{split_name}_bought_ci_high": math.nan})
        d["epochs_mean"] = statistics.fmean(row.epochs)
        d["seconds_mean"] = statistics.fmean(row.seconds)
        d["val_per_seed"] = ";".join(f"{v:.6g}" for v in row.val)
        d["test_per_seed"] = ";".join(f"{v:.6g}" for v in row.test)
        d["failures"] = "; ".join(row.failures)
        out.append(d)
    return out
