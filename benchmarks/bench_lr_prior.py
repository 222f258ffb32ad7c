"""Does ``search.lr_prior: range_test`` speed up the search? Studies with and without it, side by side.

On digits and MNIST-1D, the same small space (optimizer AdamW or SGD+Nesterov, learning rate over the five
decades an uninformed user would try, weight decay, batch size; a fixed small CNN; cosine schedule) and the
same trial budget (TPE, no pruning, the search seed = the recipe seed = 0, 1, 2), once with the prior and once
without. Reported: the best validation accuracy after the budget, the number of trials until the best-so-far
reaches a target (99% of the best validation accuracy any study reached on that dataset; a study that never
does counts as budget + 1), the share of wasted trials (validation accuracy below 50%), and the wall time
(which includes the range tests). Mean ± std over the 3 seeds.

Each study runs in its own process, two at a time, with torch on one thread (the dnntune worker gives each
in-process worker ``os.cpu_count() // workers`` threads; the benchmark processes pretend to have one core),
and without the HTML report at the end of ``tune`` (not what is measured; ~7 s a study).
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SEEDS = (0, 1, 2)
LR_RANGE = [1e-5, 1.0]
MODELS = {
    "digits": {"family": "cnn2d", "channels": 16, "depth": 2, "kernel": 3, "pooling": "max", "batch_norm": True},
    "mnist1d": {"family": "cnn1d", "channels": 32, "depth": 3, "kernel": 5, "pooling": "max", "batch_norm": True},
}


def experiment(data: str, seed: int, prior: bool, n_trials: int, epochs: int) -> dict:
    return {
        "seed": seed,
        "data": {"name": data},
        "model": copy.deepcopy(MODELS[data]),
        "loss": {"name": "cross_entropy"},
        "optim": {"name": {"choice": ["adamw", "sgd"]}, "lr": {"float": LR_RANGE, "log": True},
                  "weight_decay": {"float": [1e-5, 1e-1], "log": True}, "sgd": {"momentum": 0.9, "nesterov": True}},
        "schedule": {"name": "cosine"},
        "train": {"epochs": epochs, "batch_size": {"choice": [32, 128]}},
        "search": {"sampler": "tpe", "pruner": "none", "n_trials": n_trials, "seed": seed, "final": "best_trial",
                   "workers": 1, "lr_prior": "range_test" if prior else "none"},
    }


def _init_process() -> None:
    import importlib

    import torch

    os.cpu_count = lambda: 1  # dnntune's in-process worker then uses one torch thread
    torch.set_num_threads(1)
    # the HTML report (~7 s a study) is not part of what is measured here
    importlib.import_module("dnntune.search.tune")._write_report = lambda *a, **k: None


def run_study(data: str, seed: int, prior: bool, n_trials: int, epochs: int) -> dict:
    """One study in a fresh folder; the per-trial validation accuracies in trial order and the wall time."""
    import optuna

    from dnntune.search import tune
    from dnntune.search.storage import open_storage

    with tempfile.TemporaryDirectory(prefix="bench-lr-prior-") as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        summary = tune(experiment(data, seed, prior, n_trials, epochs), out, quiet=True)
        wall = time.perf_counter() - t0
        study = optuna.load_study(study_name="study", storage=open_storage(None, out))
        values = [t.value if t.value is not None else 0.0 for t in sorted(study.trials, key=lambda t: t.number)]
    ranges = [(t["optimizer"], t["narrowed"]["float"]) for t in summary.get("lr_prior", [])]
    return {"data": data, "seed": seed, "prior": prior, "values": values, "wall": wall, "ranges": ranges}


def trials_to(values: list[float], target: float) -> int:
    best = float("-inf")
    for i, v in enumerate(values):
        best = max(best, v)
        if best >= target:
            return i + 1
    return len(values) + 1


def _ms(xs: list[float], fmt: str = "{:.1f}") -> str:
    if len(xs) < 2:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.mean(xs))} ± {fmt.replace('+', '').format(statistics.stdev(xs))}"


def _importable():
    """This module as the spawned workers import it (run.py loads it from its path, unregistered)."""
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    return importlib.import_module(Path(__file__).stem)


def _noise(diffs: list[float]) -> str:
    """Marks a paired difference whose mean is no larger than its spread over seeds."""
    return " (within seed noise)" if len(diffs) > 1 and abs(statistics.mean(diffs)) <= statistics.stdev(diffs) else ""


def run(quick: bool) -> str:
    seeds = SEEDS[:1] if quick else SEEDS
    n_trials, epochs = (3, 1) if quick else (16, 6)
    datasets = ("digits",) if quick else ("digits", "mnist1d")
    jobs = [(d, s, p) for d in datasets for s in seeds for p in (False, True)]
    ctx = multiprocessing.get_context("spawn")
    results = []
    me = _importable()
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx, initializer=me._init_process) as ex:
        futures = [ex.submit(me.run_study, d, s, p, n_trials, epochs) for d, s, p in jobs]
        for f in futures:
            r = f.result()
            results.append(r)
            print(f"  {r['data']} seed {r['seed']} {'with' if r['prior'] else 'without'} lr_prior: best val "
                  f"{max(r['values']):.4f} in {r['wall']:.0f} s; lr ranges {r['ranges']}", flush=True)
    lines = [
        "## Learning-rate prior from the range test (`search.lr_prior: range_test`)",
        "",
        f"Studies of {n_trials} trials × {epochs} epochs (TPE, no pruning) over optimizer ∈ {{AdamW, SGD+Nesterov "
        f"0.9}}, lr ∈ [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}] (log), weight decay ∈ [1e-5, 0.1] (log), batch ∈ "
        "{32, 128}, cosine schedule, fixed small CNN; seeds " + ", ".join(map(str, seeds)) + " (search seed = "
        "recipe seed). *With prior*: before the first trial, one range test per optimizer on the middle recipe "
        "(100 steps, suggestion = minimum of the smoothed loss / 10) narrows that optimizer's lr to [s/10, 3s]. "
        "*Target*: 99% of the best validation accuracy any study reached on the dataset; a study that never "
        f"reaches it counts as {n_trials + 1}. *Wasted*: trials with validation accuracy below 50%. Wall time "
        "includes the range tests; two studies ran at a time, one torch thread each.",
        "",
        "| data | lr prior | best val accuracy (%) | trials to target | reached | wasted trials (%) | wall s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for d in datasets:
        rows = [r for r in results if r["data"] == d]
        target = 0.99 * max(max(r["values"]) for r in rows)
        for prior in (False, True):
            rs = [r for r in rows if r["prior"] == prior]
            best = [100 * max(r["values"]) for r in rs]
            reach = [trials_to(r["values"], target) for r in rs]
            wasted = [100 * sum(v < 0.5 for v in r["values"]) / len(r["values"]) for r in rs]
            lines.append(f"| {d} | {'range_test' if prior else 'none'} | {_ms(best, '{:.2f}')} | "
                         f"{_ms(reach)} | {sum(n <= n_trials for n in reach)}/{len(rs)} | {_ms(wasted, '{:.0f}')} | "
                         f"{_ms([r['wall'] for r in rs], '{:.0f}')} |")
        by_seed = {(r["seed"], r["prior"]): r for r in rows}
        d_best = [100 * (max(by_seed[s, True]["values"]) - max(by_seed[s, False]["values"])) for s in seeds]
        d_reach = [trials_to(by_seed[s, True]["values"], target) - trials_to(by_seed[s, False]["values"], target)
                   for s in seeds]
        verdicts.append(f"{d}: best val {_ms(d_best, '{:+.2f}')} points{_noise(d_best)}, trials to the target "
                        f"({100 * target:.2f}%) {_ms(d_reach, '{:+.1f}')}{_noise(d_reach)}")
    lines += ["", "Paired difference per seed (prior − none), mean ± std: " + "; ".join(verdicts) + ".",
              "Narrowed ranges per study: " + "; ".join(
                  f"{r['data']} seed {r['seed']}: " + ", ".join(f"{o} [{lo:.2g}, {hi:.2g}]" for o, (lo, hi) in
                                                                r["ranges"]) for r in results if r["prior"]) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run(quick=True))
