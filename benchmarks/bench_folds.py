"""Does ``search.folds: 5`` pick better recipes than the single validation split on small data?

On digits (1797 images; the default split validates on 144 of them), the same recipes drawn at random from
the default digits search space (its cnn2d and mlp families; resnet left out for time) are each scored two
ways: the single validation split (``folds: 1``, what a trial reports by default) and 5-fold cross-validation
of the non-test data (``folds: 5``). A recipe's "true" quality is its mean test accuracy when trained as the final model
is (on train + val, all epochs) with two other initialization seeds: runs that neither score saw. The test split
is never used to score or select.
Reported, per way of scoring:

* ties at the top: how many recipes share the best validation score (a study cannot tell them apart);
* Spearman rank correlation between the validation score and the true quality over all recipes;
* the true quality of the recipe each way would select (best validation score, ties to the lower
  validation log-loss as ``dnntune tune`` does), and its gap to the best recipe in the set.

Mean ± std over 3 seeds (each seed draws its own recipes and its own data split). The five-fold score costs five
trainings per recipe instead of one.
"""

from __future__ import annotations

import math
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
    exp["model"]["family"] = {"choice": ["cnn2d", "mlp"]}  # resnet recipes cost 5-10× more here
    exp["model"].pop("resnet")
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
    from dnntune.search.final import merge_train_val

    torch.set_num_threads(1)
    recipe = validate_recipe(raw, "recipe")
    recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"checkpoint": False, "threads": 1})})
    runs, truth = [], []
    for fold in [None] + [(i, FOLDS) for i in range(FOLDS)]:
        try:
            m = Trainer(recipe, load_data(recipe.data, recipe.seed, fold)).fit().metrics
            runs.append({"val": m["val"]["accuracy"], "tie": tie_loss(m["val"]), "test": m["test"]["accuracy"]})
        except Exception as e:  # noqa: BLE001 - a diverging recipe scores as a failed trial would: not selectable
            runs.append({"val": float("-inf"), "tie": float("inf"), "test": float("nan"), "error": str(e)[:80]})
    # the true quality, from runs neither score saw: the final model's way (train+val, all epochs), 2 init seeds
    merged = merge_train_val(load_data(recipe.data, recipe.seed))
    final = recipe.model_copy(update={"train": recipe.train.model_copy(update={
        "early_stopping": recipe.train.early_stopping.model_copy(update={"patience": None})})})
    for k in (1000, 1001):
        try:
            m = Trainer(final.model_copy(update={"seed": k}), merged).fit().metrics
            truth.append(m["test"]["accuracy"])
        except Exception:  # noqa: BLE001
            truth.append(float("nan"))
    return {"runs": runs, "truth": truth}


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def analyse(scored: list[dict]) -> dict[str, dict[str, float]]:

    ok = [s for s in scored if all(not math.isnan(r["test"]) for r in s["runs"]) and
          not any(math.isnan(t) for t in s["truth"])]
    truth = [statistics.mean(s["truth"]) for s in ok]
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
             f"{n} recipes drawn at random from the default digits space's cnn2d and mlp families ({epochs} "
             f"epochs each) per seed, seeds "
             f"{list(seeds)}; each recipe trained once on the single split and once per fold ({1 + FOLDS} "
             f"trainings), plus twice on train+val with other init seeds: its true quality is the mean test accuracy "
             f"of those two. Mean ± std over the seeds. "
             f"{os.cpu_count()} processes with one torch thread each, {wall:.0f} s in all.\n",
             "| scoring | recipes tied at the best val score | Spearman(val score, true quality) | "
             "true quality of the selected recipe (%) | gap to the best recipe (points) |",
             "|---|---|---|---|---|"]
    for way in per_seed[0]:
        lines.append(f"| {way} | {ms(way, 'ties', digits=1)} | {ms(way, 'spearman')} | "
                     f"{ms(way, 'chosen', 100)} | {ms(way, 'gap', 100)} |")
    failed = sum(any("error" in r for r in s["runs"]) or any(math.isnan(t) for t in s["truth"]) for s in scored)
    if failed:
        lines.append(f"\n{failed} recipe(s) failed in at least one run (diverged) and are left out of every row.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv))
