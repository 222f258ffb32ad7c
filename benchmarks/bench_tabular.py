"""dnntune against scikit-learn on tabular data, on the same splits: where a tuned network does and does not win.

Per dataset and seed, dnntune's own split (``load_data(section, seed)``: the test split of ``prepare``) is used by
both sides. dnntune: ``tune`` from the default tabular space (TPE + ASHA, one worker, ``TRIALS`` trials, capped at
``BUDGET`` seconds of search on a busy machine), then the best recipe retrained on train+val and
tested once. scikit-learn, fitted on train+val and tested once on the same rows: ``HistGradientBoosting`` and
``LogisticRegression`` (classification) or ``Ridge`` (regression) with their default settings, on dnntune's
train-only preprocessing (standardized numbers, median imputation + missing indicators, every category one-hot:
``max_onehot`` large). Datasets: iris, wine, breast_cancer, diabetes and a generated churn table with
categories and missing values (``examples/data/make_customers.py``, 2000 rows). Mean ± std over ``SEEDS``.

Rows are appended to ``runs/bench-tabular/rows.jsonl`` as they arrive; a re-run skips the (dataset, seed) pairs
already there (delete the folder for a fresh run). ``DNNTUNE_BENCH_DATASETS=iris,wine`` runs a subset.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
# a fixed number of trials (a wall-clock budget would make the result depend on the machine's load); the
# time limit only caps a run on a very busy machine (the table shows the trials each seed got)
TRIALS, BUDGET = 12, 240.0
ALL = ("iris", "wine", "breast_cancer", "diabetes", "customers")
DATASETS = tuple(os.environ.get("DNNTUNE_BENCH_DATASETS", ",".join(ALL)).split(","))


def _customers_csv(folder: Path) -> Path:
    """The generated table with categories and missing values (2000 rows, seed 0)."""
    spec = importlib.util.spec_from_file_location("make_customers", ROOT / "examples" / "data" / "make_customers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.write(folder / "customers-2000.csv", 2000, seed=0)


def _data_section(name: str, folder: Path) -> dict:
    if name == "customers":
        return {"name": "csv", "path": str(_customers_csv(folder)), "target": "churn"}
    return {"name": name}


def _sklearn(section: dict, seed: int) -> dict:
    """Test metrics of the scikit-learn models on dnntune's split (train+val to fit, test to score)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, mean_squared_error, r2_score

    from dnntune.config import validate_recipe
    from dnntune.data import load_data

    extra = {"max_onehot": 10000} if section["name"] == "csv" else {}
    recipe = validate_recipe({"data": {**section, **extra}, "model": {"family": "linear"}, "seed": seed})
    d = load_data(recipe.data, seed)
    x = np.concatenate([d.train.x.numpy(), d.val.x.numpy()])
    y = np.concatenate([d.train.y.numpy(), d.val.y.numpy()])
    xt, yt = d.test.x.numpy(), d.test.y.numpy()
    out = {}
    if d.task == "classification":
        for name, model in (("hgb", HistGradientBoostingClassifier(random_state=seed)),
                            ("linear", LogisticRegression(max_iter=5000))):
            out[name] = {"accuracy": float(accuracy_score(yt, model.fit(x, y).predict(xt)))}
        return out
    y_mean, y_std = float(d.y_mean), float(d.y_std)
    y, yt = y * y_std + y_mean, yt * y_std + y_mean  # original units, as dnntune reports
    for name, model in (("hgb", HistGradientBoostingRegressor(random_state=seed)), ("linear", Ridge())):
        pred = model.fit(x, y).predict(xt)
        out[name] = {"rmse": float(mean_squared_error(yt, pred) ** 0.5), "r2": float(r2_score(yt, pred))}
    return out


def _dnntune(section: dict, seed: int, out: Path, trials: int, budget: float) -> dict:
    from dnntune.search.defaults import complete_experiment
    from dnntune.search.tune import tune

    shutil.rmtree(out, ignore_errors=True)
    experiment = complete_experiment({"data": section, "seed": seed,
                                      "search": {"n_trials": trials, "timeout": budget, "workers": 1}})
    t0 = time.perf_counter()
    s = tune(experiment, out, quiet=True, tracker="none")
    test = s["test"]
    keep = {k: float(test[k]) for k in ("accuracy", "rmse", "r2") if k in test}
    return {**keep, "seconds": time.perf_counter() - t0, "trials": s["trials"]["complete"] + s["trials"]["pruned"]}


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def _table(rows: list[dict]) -> list[str]:
    lines = ["| dataset | metric (test) | dnntune tune (MLP, residual MLP, linear) | HistGradientBoosting | "
             "LogisticRegression / Ridge | seeds | dnntune trials per seed | dnntune s per seed |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ALL:
        mine = [r for r in rows if r["dataset"] == name]
        if not mine:
            continue
        metrics = ("accuracy",) if "accuracy" in mine[0]["dnntune"] else ("rmse", "r2")
        for m in metrics:
            cells = [_fmt([r["dnntune"][m] for r in mine]), _fmt([r["sklearn"]["hgb"][m] for r in mine]),
                     _fmt([r["sklearn"]["linear"][m] for r in mine])]
            digits = 1 if m == "rmse" else 3
            if m == "rmse":
                cells = [_fmt([r["dnntune"][m] for r in mine], digits), _fmt([r["sklearn"]["hgb"][m] for r in mine],
                         digits), _fmt([r["sklearn"]["linear"][m] for r in mine], digits)]
            secs = statistics.mean(r["dnntune"]["seconds"] for r in mine)
            tried = statistics.mean(r["dnntune"]["trials"] for r in mine)
            lines.append(f"| {name} | {m} | {cells[0]} | {cells[1]} | {cells[2]} | {len(mine)} | {tried:.1f} | "
                         f"{secs:.0f} |")
    return lines


LOWER_IS_BETTER = {"rmse"}
SKLEARN = {"hgb": "HistGradientBoosting", "linear": "LogisticRegression / Ridge"}


def _verdict(rows: list[dict]) -> list[str]:
    """Per dataset: dnntune against the better scikit-learn model (by mean), paired by seed (both sides see the
    same split, so the per-seed difference is the fair comparison): mean ± std of the difference, and on how
    many seeds dnntune is ahead, tied or behind."""
    out = []
    for name in ALL:
        mine = [r for r in rows if r["dataset"] == name]
        if not mine:
            continue
        m = "accuracy" if "accuracy" in mine[0]["dnntune"] else "rmse"
        sign = -1 if m in LOWER_IS_BETTER else 1
        ours = [r["dnntune"][m] for r in mine]
        best = max(SKLEARN, key=lambda k: sign * statistics.mean(r["sklearn"][k][m] for r in mine))
        theirs = [r["sklearn"][best][m] for r in mine]
        diff = [sign * (a - b) for a, b in zip(ours, theirs)]  # > 0: dnntune better
        ahead, tied = sum(d > 1e-9 for d in diff), sum(abs(d) <= 1e-9 for d in diff)
        behind = len(diff) - ahead - tied
        what = ("ahead on every seed" if ahead == len(diff) else "behind on every seed" if behind == len(diff)
                else f"mixed: ahead on {ahead}, tied on {tied}, behind on {behind} of {len(diff)} seeds")
        sd = statistics.stdev(diff) if len(diff) > 1 else 0.0
        model = {"hgb": "HistGradientBoosting", "linear": "LogisticRegression" if sign > 0 else "Ridge"}[best]
        out.append(f"- {name} ({m}): dnntune {statistics.mean(ours):.3f}, {model} (the better scikit-learn model "
                   f"here) {statistics.mean(theirs):.3f}; per-seed difference (positive: dnntune better) "
                   f"{statistics.mean(diff):+.3f} ± {sd:.3f}; dnntune {what}.")
    return out


def _commit() -> str:
    import subprocess

    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip() or "unknown"


def run(quick: bool = False) -> str:
    folder = ROOT / "runs" / ("bench-tabular-quick" if quick else "bench-tabular")
    folder.mkdir(parents=True, exist_ok=True)
    rows_file = folder / "rows.jsonl"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    trials, budget = (2, 10.0) if quick else (TRIALS, BUDGET)
    seeds = SEEDS[:1] if quick else SEEDS
    measured = 0
    for name in DATASETS:
        for seed in seeds:
            if any(r["dataset"] == name and r["seed"] == seed for r in rows):
                continue
            section = _data_section(name, folder)
            row = {"dataset": name, "seed": seed, "sklearn": _sklearn(section, seed),
                   "dnntune": _dnntune(section, seed, folder / f"{name}-{seed}", trials, budget),
                   "commit": _commit(), "load": round(os.getloadavg()[0], 1)}
            measured += 1
            rows.append(row)
            with rows_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    lines = [f"## Tabular data: dnntune against scikit-learn on the same splits ({len(seeds)} seeds)\n",
             f"dnntune: `tune` from the default tabular space, one worker, {trials} trials (capped at "
             f"{budget:.0f} s of search) per dataset and seed, then the best recipe retrained on train+val; "
             "scikit-learn with default settings fitted on train+val of the same split, on dnntune's train-only "
             "preprocessing (every category one-hot). Test split evaluated once; mean ± std over seeds (each seed "
             "is another split). Accuracy: higher is better; RMSE (target units): lower; R²: higher. Trials per "
             "seed: completed + pruned within the budget; the seconds include the retrain and the report.\n",
             *_table(rows), "", *_verdict(rows)]
    commits = sorted({r.get("commit", "not recorded") for r in rows})
    loads = [r["load"] for r in rows if "load" in r]
    lines.append(f"\nRows from `runs/bench-tabular/rows.jsonl`, measured at commit(s) {', '.join(commits)}"
                 + (f", load average {min(loads):.1f}–{max(loads):.1f} when each row finished" if loads else "")
                 + ("" if measured == len(rows) else f"; {measured} of {len(rows)} measured by this invocation, "
                    "the others by an earlier one (the stamp's time is this invocation's)") + ".")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv))
