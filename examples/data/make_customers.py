"""Generate ``customers.csv``: a small churn table with categories and missing values, as real files come.

Columns: ``age``, ``income`` and ``support_calls`` (numbers with missing cells written as empty, ``NA`` and
``?``), ``tenure_months``, ``plan`` (3 levels, some empty), ``region`` (4 levels) and ``city`` (60 levels:
embedded rather than one-hot with the default ``max_onehot: 16``), and the target ``churn`` (``yes``/``no``).
Churn depends on tenure, support calls, plan, region, a per-city offset, age (not monotonically) and on
whether the income was reported (a missing value that carries information).

Usage: ``python examples/data/make_customers.py [ROWS] [OUT.csv] [SEED]`` (default 400 rows,
examples/data/customers.csv, seed 0).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

PLANS = ("basic", "plus", "pro")
REGIONS = ("east", "west", "north", "south")
COLUMNS = ("age", "income", "tenure_months", "support_calls", "plan", "region", "city", "churn")


def make(rows: int, seed: int = 0) -> list[list[str]]:
    """The table's rows as CSV cells (header not included)."""
    rng = np.random.default_rng(seed)
    city_effect = np.random.default_rng(1234).normal(0, 1.0, 60)  # the same cities in every seed
    age = rng.integers(18, 80, rows)
    income = rng.lognormal(10.6, 0.4, rows)
    tenure = rng.integers(1, 72, rows)
    calls = rng.poisson(1.5, rows)
    plan = rng.choice(len(PLANS), rows, p=[0.5, 0.3, 0.2])
    region = rng.choice(len(REGIONS), rows)
    city = rng.integers(0, 60, rows)
    income_missing = rng.random(rows) < 0.15
    logit = (-0.05 * (tenure - 30) + 0.6 * (calls - 1.5) + np.array([0.6, 0.0, -0.8])[plan]
             + np.array([0.3, -0.3, 0.0, 0.2])[region] + city_effect[city] + 0.02 * np.abs(age - 45)
             + 1.0 * income_missing - 0.4)
    churn = rng.random(rows) < 1 / (1 + np.exp(-logit))
    out = []
    for i in range(rows):
        cells = [str(age[i]), "" if income_missing[i] else f"{income[i]:.0f}", str(tenure[i]), str(calls[i]),
                 PLANS[plan[i]], REGIONS[region[i]], f"city{city[i]:02d}", "yes" if churn[i] else "no"]
        if rng.random() < 0.08:
            cells[0] = "NA"  # age not recorded: missing at random
        if rng.random() < 0.05:
            cells[3] = "?"
        if rng.random() < 0.05:
            cells[4] = ""
        out.append(cells)
    return out


def write(path: Path, rows: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(make(rows, seed))
    return path


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    dest = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).with_name("customers.csv")
    print(write(dest, n, int(sys.argv[3]) if len(sys.argv) > 3 else 0))
