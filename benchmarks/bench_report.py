"""Report speed: ``dnntune report`` on a synthetic 200-trial study (the check: under 30 s on this machine).

The study is built without training (``optuna.create_trial`` + ``study.add_trials``) in a run folder
with a journal storage, shaped like a ``dnntune tune`` study of the default MLP space: conditional
parameters, per-epoch intermediate values, complete / pruned / failed trials on two worker
processes, a final test with a confusion matrix. The timing covers loading the journal and
writing every figure and the HTML page.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

SPACE = {
    "model.family": CategoricalDistribution(["mlp", "linear"]),
    "model.mlp.depth": IntDistribution(1, 4),
    "model.mlp.width": IntDistribution(16, 512, log=True),
    "model.mlp.activation": CategoricalDistribution(["relu", "gelu", "silu"]),
    "model.mlp.dropout": FloatDistribution(0.0, 0.5),
    "optim.name": CategoricalDistribution(["adamw", "sgd", "rmsprop"]),
    "optim.lr": FloatDistribution(3e-4, 3e-2, log=True),
    "optim.weight_decay": FloatDistribution(1e-5, 0.1, log=True),
    "optim.sgd.momentum": FloatDistribution(0.5, 0.99),
    "schedule.name": CategoricalDistribution(["cosine", "one_cycle", "step", "constant"]),
    "schedule.warmup_epochs": FloatDistribution(0.0, 3.0),
    "train.batch_size": CategoricalDistribution([32, 64, 128, 256]),
    "augment.noise": FloatDistribution(0.0, 0.2),
}


def _params(rng) -> dict:
    p = {}
    for name, d in SPACE.items():
        if name.startswith("model.mlp.") and p.get("model.family") != "mlp":
            continue
        if name.startswith("optim.sgd.") and p.get("optim.name") != "sgd":
            continue
        if isinstance(d, CategoricalDistribution):
            p[name] = d.choices[rng.integers(len(d.choices))]
        elif isinstance(d, IntDistribution):
            p[name] = int(round(math.exp(rng.uniform(math.log(d.low), math.log(d.high))))) if d.log \
                else int(rng.integers(d.low, d.high + 1))
        else:
            p[name] = float(math.exp(rng.uniform(math.log(d.low), math.log(d.high)))) if d.log \
                else float(rng.uniform(d.low, d.high))
    return p


def synthetic_study(run_dir: Path, n_trials: int = 200, epochs: int = 30, multi: bool = False,
                    seed: int = 0, failed_only: bool = False) -> optuna.Study:
    """A journal study in ``run_dir`` that looks like one written by ``dnntune tune``."""
    from dnntune.search.storage import open_storage

    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    names = ["accuracy", "params"] if multi else ["accuracy"]
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    study = optuna.create_study(study_name="synthetic", storage=open_storage(None, run_dir), directions=directions)
    study.set_user_attr("dnntune:experiment", {"data": {"name": "synthetic"},
                                                "search": {"sampler": "tpe", "pruner": "asha"}})
    study.set_user_attr("dnntune:objectives", names)
    study.set_user_attr("dnntune:directions", directions)
    t0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
    clock = {1001: t0, 1002: t0}
    trials = []
    for number in range(n_trials):
        p = _params(rng)
        quality = (-abs(math.log10(p["optim.lr"]) + 2.2) * 0.12 - 0.05 * (p["model.family"] == "linear")
                   - 0.1 * p.get("model.mlp.dropout", 0) + rng.normal(0, 0.02))
        final = float(np.clip(0.92 + quality, 0.1, 1.0))
        rate = rng.uniform(0.1, 0.4)
        curve = {e: float(final * (1 - math.exp(-rate * e)) + rng.normal(0, 0.005)) for e in range(1, epochs + 1)}
        u = rng.uniform()
        state = TrialState.FAIL if failed_only or u < 0.08 else TrialState.PRUNED if u < 0.5 else TrialState.COMPLETE
        if state == TrialState.PRUNED:
            stop = int(rng.choice([1, 3, 9]))
            curve = {e: v for e, v in curve.items() if e <= stop}
        if state == TrialState.FAIL:
            curve = {e: v for e, v in curve.items() if e <= 2}
        n_params = int(p.get("model.mlp.width", 8) ** 2 * p.get("model.mlp.depth", 1) + 100)
        attrs = {"epochs": len(curve), "best_epoch": max(curve, key=curve.get), "params": n_params,
                 "wall_seconds": round(0.4 * len(curve), 3), "val": {"accuracy": curve[max(curve)]},
                 "recipe": {"seed": 0, "data": {"name": "synthetic"}, "model": {"family": p["model.family"]},
                            "optim": {"name": p["optim.name"], "lr": p["optim.lr"]}}}
        if state == TrialState.FAIL:
            attrs["fail_reason"] = "diverged (NaN/inf loss) at epoch 2" if rng.uniform() < 0.7 else \
                "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"
        pid = 1001 + number % 2
        start = clock[pid]
        clock[pid] = start + datetime.timedelta(seconds=attrs["wall_seconds"] + 0.05)
        if state == TrialState.COMPLETE:
            values = [curve[epochs], float(n_params)] if multi else [curve[epochs]]
        elif state == TrialState.PRUNED:
            values = None if multi else [curve[max(curve)]]
        else:
            values = None
        t = optuna.trial.create_trial(state=state, values=values, params=p,
                                      distributions={k: SPACE[k] for k in p}, user_attrs=attrs,
                                      system_attrs={"dnntune:owner": {"host": "bench", "pid": pid}},
                                      intermediate_values={} if multi else curve)
        t.datetime_start, t.datetime_complete = start, clock[pid]
        trials.append(t)
    study.add_trials(trials)
    if failed_only:
        return study
    best = run_dir / "best"
    best.mkdir(exist_ok=True)
    cm = (np.eye(10) * 90 + rng.integers(0, 6, (10, 10))).astype(int).tolist()
    (best / "summary.json").write_text(json.dumps({"metrics": {"test": {"accuracy": 0.91, "f1_macro": 0.9,
                                                                        "confusion_matrix": cm}}}))
    (run_dir / "summary.json").write_text(json.dumps({"study": "synthetic", "storage": str(run_dir / "study.journal"),
                                                      "wall_seconds": 3600.0}))
    return study


def run(quick: bool) -> str:
    from dnntune.report import write_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load = os.getloadavg()[0]
    n = 40 if quick else 200
    repeats = 1 if quick else 3
    rows = []
    for multi in (False, True):
        times, report = [], None
        for r in range(repeats):
            tmp = Path(tempfile.mkdtemp(prefix="bench_report_"))
            try:
                synthetic_study(tmp / "run", n_trials=n, multi=multi, seed=r)
                t0 = time.perf_counter()
                report = write_report(tmp / "run")
                times.append(time.perf_counter() - t0)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        slowest = sorted(report.seconds.items(), key=lambda kv: -kv[1])[:3]
        rows.append(f"| {n} | {'2 (accuracy, params)' if multi else '1 (accuracy)'} | "
                    f"{statistics.median(times):.1f} | {max(times):.1f} | "
                    + ", ".join(f"{k} {v:.1f} s" for k, v in slowest) + " |")
    return "\n".join([
        "## Report generation",
        "",
        f"`dnntune report` on a synthetic {n}-trial study in a run folder (journal storage; ~50% complete, ~42% "
        "pruned, ~8% failed; 13 parameters, some conditional; 30 epochs of intermediate values; 2 worker "
        "processes), timed from loading the journal to the written HTML page and PNG figures, "
        f"{repeats} repeat(s), on a shared machine (load average {load:.1f} at the start). The check: under 30 s "
        "for 200 trials.",
        "",
        "| trials | objectives | median s | max s | slowest parts |",
        "|---:|---|---:|---:|---|",
        *rows,
    ])


if __name__ == "__main__":
    print(run(quick=False))
