"""Training every row of both views with every seed, in worker processes."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from ..config import validate_recipe
from ._plan import Row, plan, recipe_key
from ._spec import AblationSpec, _task


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_job(recipe: dict, seed: int, metric: str) -> dict:
    """Train one row's recipe with one seed through the one training path; val and test values."""
    from ..engine.trainer import train
    from ..errors import TrainingDiverged

    raw = copy.deepcopy(recipe)
    raw["seed"] = seed
    raw["train"] = {**raw["train"], "checkpoint": False, "threads": 1}
    r = validate_recipe(raw, "ablation row")
    t0 = time.perf_counter()
    try:
        res = train(r)
    except TrainingDiverged as e:
        return {"val": math.nan, "test": math.nan, "epochs": e.epoch, "seconds": time.perf_counter() - t0,
                "failure": f"diverged at epoch {e.epoch}"}
    return {"val": res.metrics["val"][metric], "test": res.metrics["test"][metric], "epochs": res.epochs,
            "seconds": time.perf_counter() - t0, "failure": None}


def _run_all(jobs: list[tuple[str, dict, int]], metric: str, workers: int,
             on_done: Callable[[int, int], None] | None) -> dict[tuple[str, int], dict]:
    results: dict[tuple[str, int], dict] = {}
    if workers == 1 or len(jobs) == 1:
        import torch

        threads = torch.get_num_threads()
        try:
            for i, (key, recipe, seed) in enumerate(jobs):
                results[(key, seed)] = run_job(recipe, seed, metric)
                if on_done:
                    on_done(i + 1, len(jobs))
        finally:
            torch.set_num_threads(threads)
        return results
    import multiprocessing

    # spawn, not fork: a forked child of a process that already ran torch's thread pool can deadlock
    ctx = multiprocessing.get_context("spawn")
    ex = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker)
    try:
        futures = {ex.submit(run_job, recipe, seed, metric): (key, seed) for key, recipe, seed in jobs}
        for i, fut in enumerate(as_completed(futures)):
            results[futures[fut]] = fut.result()
            if on_done:
                on_done(i + 1, len(jobs))
    except BaseException:
        ex.shutdown(wait=True, cancel_futures=True)  # a failed row (or Ctrl-C) stops the runs not yet started
        raise
    ex.shutdown()
    return results


@dataclass
class AblationResult:
    """Both views with their numbers, and how they were produced."""

    spec: AblationSpec
    metric: str
    direction: str
    cumulative: list[Row]
    leave_one_out: list[Row]
    unchanged: list[str]
    wall_seconds: float

    def rows(self) -> list[Row]:
        return self.cumulative + self.leave_one_out


def ablate(spec: AblationSpec, on_done: Callable[[int, int], None] | None = None) -> AblationResult:
    """Train every row of both views with every seed (each distinct recipe once per seed) and collect the numbers.

    Example:
        >>> from dnntune.report._ablation import markdown  # doctest: +SKIP
        >>> spec = load_ablation("ablation.yaml")  # doctest: +SKIP
        >>> result = ablate(spec)                  # doctest: +SKIP
        >>> print(markdown(result))                # doctest: +SKIP
    """
    from ..engine.metrics import default_metric, direction

    t0 = time.perf_counter()
    task = _task(spec.best)
    metric = spec.metric or spec.best.train.metric or default_metric(task)
    dirn = direction(metric, task)
    cumulative, loo, same = plan(spec)
    unique = {recipe_key(r.recipe): r.recipe for r in cumulative + loo}
    # longest runs first, so the last worker is not left alone with a long one
    ordered = sorted(unique.items(), key=lambda kv: -kv[1]["train"]["epochs"])
    jobs = [(k, recipe, s) for k, recipe in ordered for s in spec.seeds]
    results = _run_all(jobs, metric, spec.workers, on_done)
    _fill(cumulative + loo, results, spec.seeds)
    return AblationResult(spec, metric, dirn, cumulative, loo, same, time.perf_counter() - t0)


def _fill(rows: list[Row], results: dict[tuple[str, int], dict], seeds: list[int]) -> None:
    """Each row's per-seed numbers, from the runs of its recipe (shared by rows with the same recipe)."""
    for row in rows:
        for s in seeds:
            r = results[(recipe_key(row.recipe), s)]
            row.val.append(r["val"])
            row.test.append(r["test"])
            row.epochs.append(r["epochs"])
            row.seconds.append(r["seconds"])
            if r["failure"]:
                row.failures.append(f"seed {s}: {r['failure']}")
