"""What each strategy bought: ``dnntune ablate`` on digits and MNIST-1D, baseline vs the strong recipes.

Baseline: the seed articles' recipe (``examples/digits-baseline.yaml``; on MNIST-1D the same recipe, dnntune's
default baseline): an MLP with one hidden layer of 256, Adam at lr 1e-3, constant schedule, batch 64, 10 epochs,
no regularization, augmentation or early stopping. Best: ``examples/digits-strong.yaml`` and
``examples/mnist1d-strong.yaml`` (when ``digits-strong.yaml`` does not exist yet, the CNN recipe ``DIGITS_STRONG``
below, written for this benchmark, stands in and the section says so). Every row over seeds 0, 1, 2, two worker
processes with one torch thread each, through ``dnntune.ablation`` (the code of ``dnntune ablate``; its tables are
rendered by ``dnntune.report._ablation``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

from dnntune.ablation import ablate, load_ablation, table_rows
from dnntune.report._ablation import markdown

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# stands in for examples/digits-strong.yaml while that file does not exist (val ~0.99, test ~0.99 on seeds 0, 1)
DIGITS_STRONG = {
    "seed": 0,
    "data": {"name": "digits"},
    "model": {"family": "cnn2d", "channels": 32, "depth": 2, "kernel": 3, "pooling": "max", "batch_norm": True,
              "dropout": 0.1, "head": "flatten"},
    "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
    "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.05},
    "schedule": {"name": "cosine", "warmup_epochs": 1},
    "train": {"epochs": 30, "batch_size": 64},
    "augment": {"crop": 1, "rotate": 10},
}


def _strongest(name: str) -> tuple[object, str]:
    path = EXAMPLES / f"{name}-strong.yaml"
    if path.exists():
        return str(path), f"`examples/{path.name}`"
    if name == "digits":
        return DIGITS_STRONG, "the benchmark's own CNN recipe (`DIGITS_STRONG` in `bench_ablation.py`; " \
                              "`examples/digits-strong.yaml` did not exist when this ran)"
    raise FileNotFoundError(path)


def _baseline(name: str) -> tuple[object, str]:
    path = EXAMPLES / f"{name}-baseline.yaml"
    if path.exists():
        return str(path), f"`examples/{path.name}`"
    return None, "the seed articles' baseline (dnntune's default)"


def _recipe_text(recipe) -> str:
    """The best recipe as run, so the section stays true when the example file changes later."""
    text = Path(recipe).read_text() if isinstance(recipe, str) else yaml.safe_dump(recipe, default_flow_style=None,
                                                                                   sort_keys=False)
    body = "\n".join(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return f"Best recipe as run:\n\n```yaml\n{body}\n```\n"


def _headline(result) -> str:
    """The strategy with the largest validation gain in each view."""
    rows = [d for d in table_rows(result) if d["strategy"]]
    parts = []
    for view, name in (("cumulative", "cumulative"), ("leave_one_out", "leave-one-out")):
        vr = [d for d in rows if d["view"] == view]
        if vr:
            top = max(vr, key=lambda d: d["val_bought"])
            parts.append(f"{name}: {top['strategy']} ({100 * top['val_bought']:+.1f} val points)")
    return "Largest validation gain — " + "; ".join(parts) + "."


def run(quick: bool) -> str:
    seeds = [0, 1] if quick else [0, 1, 2]
    datasets = ["digits"] if quick else ["digits", "mnist1d"]
    sets = ["train.epochs=2"] if quick else []
    sections = []
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as tmp:
        for name in datasets:
            best, best_desc = _strongest(name)
            baseline, base_desc = _baseline(name)
            spec_file = Path(tmp) / f"{name}-ablation.yaml"
            spec_file.write_text(yaml.safe_dump({"best": best, "baseline": baseline, "seeds": seeds,
                                                 "workers": 1 if quick else 2, "set": sets}))
            spec = load_ablation(spec_file)
            spec.best_source, spec.baseline_source = best_desc, base_desc
            t0 = time.perf_counter()
            result = ablate(spec, on_done=lambda i, n, name=name: print(f"  {name}: {i}/{n} runs", flush=True)
                            if i % 10 == 0 or i == n else None)
            print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
            sections.append(markdown(result, title=f"{name}") + "\n" + _headline(result) + "\n\n"
                            + _recipe_text(best))
    intro = [
        "## What each strategy bought (ablation)",
        "",
        "`dnntune ablate` from the seed articles' baseline (MLP 1×256, Adam lr 1e-3, constant schedule, batch 64, "
        "10 epochs, nothing else) to a strong recipe, in two views: *cumulative* switches one strategy at a time "
        "to the strong recipe's setting (architecture, optimizer with its lr, schedule, batch size, loss, "
        "regularization, augmentation, training length, in that order; the last row is the strong recipe), "
        "*leave-one-out* reverts one strategy at a time. Each row is trained with seeds "
        f"{', '.join(map(str, seeds))} (the seed draws the validation split and the initialization); *bought* is "
        "the paired difference over the same seeds with its 95% t-interval. Validation numbers are the ones to "
        "choose with; test numbers are the final evaluation of each row. The strong recipes were written and "
        "tuned by hand on validation accuracy, so their validation numbers are slightly optimistic."
        + (" **--quick: 2 epochs, 2 seeds, digits only; don't quote.**" if quick else ""),
        "",
    ]
    return "\n".join(intro) + "\n".join(sections)


if __name__ == "__main__":
    print(run(quick=True))
