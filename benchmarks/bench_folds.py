"""Does ``search.folds: 5`` pick better recipes than the single validation split on small data?

On digits (1797 images; the default split validates on 144 of them), the same recipes drawn at random from
the default digits search space are each scored two ways: the single validation split (``folds: 1``, what
a trial reports by default) and 5-fold cross-validation of the non-test data (``folds: 5``). A recipe's
"true" quality is its mean test accuracy over all six models trained for it (one per fold + the
single-split one); the test split is never used to score or select. Reported, per way of scoring:

* ties at the top: how many recipes share the best validation score (a study cannot tell them apart);
* Spearman rank correlation between the validation score and the true quality over all recipes;
* the true quality of the recipe each way would select (best validation score, ties to the lower
  validation log-loss as ``dnntune tune`` does), and its gap to the best recipe in the set.

Mean ± std over 3 seeds (each seed draws its own recipes and its own data split). The five-fold score costs five
trainings per recipe instead of one.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

SEEDS = (0, 1, 2)
FOLDS = 5


def _space(epochs: int) -> dict:
    from dnntune.search import default_experiment

    exp = default_experiment({"name": "digits"}, "image", "classification")
    exp["train"]["epochs"] = epochs
    return exp


def recipes(seed: int, n: int, epochs: int) -> list[dict]:
    import optuna

    from dnntune.config import validate_recipe
    from dnntune.search import suggest_recipe

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    exp = _space(epochs)
    exp["seed"] = seed
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [validate_recipe(suggest_recipe(study.ask(), exp), "recipe").to_dict() for _ in range(n)]


def score(raw: dict) -> dict:
    """Train one recipe on the single split and on each fold; validation and test metrics of every run."""
    import torch

    from dnntune.config import validate_recipe
    from dnntune.data import load_data
    from dnntune.engine.metrics import tie_loss
    from dnntune.engine.trainer import Trainer

    torch.set_num_threads(1)
    recipe = validate_recipe(raw, "recipe")
    recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"checkpoint": False, "threads": 1})})
    runs = []
    for fold in [None] + [(i, FOLDS) for i in range(FOLDS)]:
        try:
            m = Trainer(recipe, load_data(recipe.data, recipe.seed, fold)).fit().metrics
            runs.append({"val": m["val"]["accuracy"], "tie": tie_loss(m["val"]), "test": m["test"]["accuracy"]})
        except Exception as e:  # noqa: BLE001 - a diverging recipe scores as a failed trial would: not selectable
            runs.append({"val": float("-inf"), "tie": float("inf"), "test": float("nan"), "error": str(e)[:80]})
    return {"runs": runs}


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def analyse(scored: list[dict]) -> dict[str, dict[str, float]]:
    import math

    ok = [s for s in scored if all(not math.isnan(r["test"]) for r in s["runs"])]
    truth = [statistics.mean(r["test"] for r in s["runs"]) for s in ok]
    ways = {
        "single split (folds: 1)": [(s["runs"][0]["val"], s["runs"][0]["tie"]) for s in ok],
        f"{FOLDS}-fold (folds: {FOLDS})": [(statistics.mean(r["val"] for r in s["runs"][1:]),
                                            statistics.mean(r["tie"] for r in s["runs"][1:])) for s in ok],
    }
    out = {}
    for way, vals in ways.items():
        top = max(v for v, _ in vals)
        chosen = max(range(len(vals)), key=lambda i: (vals[i][0], -vals[i][1]))
        out[way] = {"ties": sum(v == top for v, _ in vals), "spearman": _spearman([v for v, _ in vals], truth),
                    "chosen": truth[chosen], "gap": max(truth) - truth[chosen], "recipes": len(ok)}
    return out


def run(quick: bool = False) -> str:
    n, epochs = (4, 2) if quick else (16, 20)
    seeds = SEEDS[:1] if quick else SEEDS
    t0 = time.perf_counter()
    jobs = [(seed, raw) for seed in seeds for raw in recipes(seed, n, epochs)]
    # spawn: a forked child of a process whose torch thread pool already ran can die or deadlock
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        scored = list(pool.map(score, [raw for _, raw in jobs]))
    per_seed = [analyse([s for (seed, _), s in zip(jobs, scored) if seed == k]) for k in seeds]
    wall = time.perf_counter() - t0

    def ms(way: str, key: str, scale: float = 1.0, digits: int = 2) -> str:
        xs = [r[way][key] * scale for r in per_seed]
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.{digits}f} ± {sd:.{digits}f}"

    lines = ["## Cross-validated trials on small data (`search.folds`)\n",
             f"{n} recipes drawn at random from the default digits space ({epochs} epochs each) per seed, seeds "
             f"{list(seeds)}; each recipe trained once on the single split and once per fold ({1 + FOLDS} "
             f"trainings). True quality = mean test accuracy of its {1 + FOLDS} models. Mean ± std over the seeds. "
             f"{os.cpu_count()} processes with one torch thread each, {wall:.0f} s in all.\n",
             "| scoring | recipes tied at the best val score | Spearman(val score, true quality) | "
             "true quality of the selected recipe (%) | gap to the best recipe (points) |",
             "|---|---|---|---|---|"]
    for way in per_seed[0]:
        lines.append(f"| {way} | {ms(way, 'ties', digits=1)} | {ms(way, 'spearman')} | "
                     f"{ms(way, 'chosen', 100)} | {ms(way, 'gap', 100)} |")
    failed = sum(any("error" in r for r in s["runs"]) for s in scored)
    if failed:
        lines.append(f"\n{failed} recipe(s) failed in at least one run (diverged) and are left out of every row.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv))
