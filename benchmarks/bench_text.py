"""Text classification: dnntune's default text search space against TF-IDF + logistic regression, same split,
same wall-clock budget.

The corpus: which of seven installed libraries (numpy, scipy, scikit-learn, torch, sympy, networkx,
matplotlib) a function's or class's docstring comes from — its first paragraph, with the libraries' own names
removed (``examples/data/make_docstrings.py``; 600 per class, 4200 real English documents, built offline and
deterministically from the installed versions). The split is dnntune's own (``text_csv`` through
``data.core._partition``, the function ``prepare`` uses: 20 % test, 10 % of the rest validation, stratified,
seeded).

* **TF-IDF + logistic regression** (scikit-learn): word 1–2-grams (sublinear tf), C chosen from a grid on the
  validation split, refitted on train + validation, tested once.
* **dnntune**: ``dnntune tune`` on an experiment naming only the data (the default text space: embedding_bag,
  textcnn, rnn, transformer; tokenizer vocabulary size, token dropout / masking, optimizer, schedule ...),
  TPE + ASHA within the wall-clock budget, then the best recipe retrained on train + validation and tested once.

Environment: ``DNNTUNE_BENCH_TEXT_BUDGET`` (seconds of search, default 900 = the issue's 15 minutes),
``DNNTUNE_BENCH_TEXT_SEEDS`` (default ``0,1,2``), ``DNNTUNE_BENCH_TEXT_WORKERS`` (default 1).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "data"))

MAX_LENGTH = 64  # 95 % of these docstrings have at most 43 tokens
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def corpus(per_class: int) -> Path:
    import make_docstrings

    from dnntune.data.core import cache_dir

    path = cache_dir() / f"docstrings-{per_class}.csv"
    if not path.exists():
        make_docstrings.write(path, per_class)
    return path


def data_section(path: Path) -> dict:
    return {"name": "text_csv", "path": str(path), "max_length": MAX_LENGTH}


def split(path: Path, seed: int):
    """The raw texts of dnntune's train / val / test split for this seed (as prepare() partitions them)."""
    from dnntune.config import validate_recipe
    from dnntune.data.core import DATASETS, _checked, _partition

    recipe = validate_recipe({"seed": seed, "data": data_section(path), "model": {"family": "embedding_bag"}})
    raw = DATASETS.get("text_csv").builder(recipe.data.knobs)
    x, y = _checked(raw, "text_csv")
    return _partition(raw, x, y, recipe.data, seed, None)


def tfidf_logreg(path: Path, seed: int) -> dict:
    """Word 1-2-gram TF-IDF + logistic regression: C on validation, refit on train+val, test once."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    t0 = time.perf_counter()
    x_tr, x_va, x_te, y_tr, y_va, y_te = split(path, seed)

    def model(c):
        return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True),
                             LogisticRegression(C=c, max_iter=2000))

    scores = {c: float((model(c).fit(list(x_tr), y_tr).predict(list(x_va)) == y_va).mean()) for c in C_GRID}
    best_c = max(C_GRID, key=lambda c: (scores[c], -c))
    final = model(best_c).fit(list(x_tr) + list(x_va), np.concatenate([y_tr, y_va]))
    acc = float((final.predict(list(x_te)) == y_te).mean())
    return {"test": acc, "val": scores[best_c], "C": best_c, "seconds": time.perf_counter() - t0,
            "sizes": (len(y_tr), len(y_va), len(y_te))}


def dnntune_tune(path: Path, seed: int, budget: float, workers: int, out: Path) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    exp = out.parent / f"{out.name}.yaml"
    exp.write_text(yaml.safe_dump({"seed": seed, "data": data_section(path)}))
    cmd = [sys.executable, "-m", "dnntune", "tune", str(exp), "--timeout", str(budget), "--workers", str(workers),
           "--out", str(out), "--json", "--quiet", "--study", f"text-{seed}"]
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    s = json.loads(res.stdout)
    s["_wall"] = time.perf_counter() - t0
    return s


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def run(quick: bool = False) -> str:
    budget = 60.0 if quick else float(os.environ.get("DNNTUNE_BENCH_TEXT_BUDGET", 900))
    seeds = [0] if quick else [int(s) for s in os.environ.get("DNNTUNE_BENCH_TEXT_SEEDS", "0,1,2").split(",")]
    workers = int(os.environ.get("DNNTUNE_BENCH_TEXT_WORKERS", 1))
    per_class = 100 if quick else 600
    path = corpus(per_class)
    import make_docstrings

    versions = ", ".join(f"{k} {v}" for k, v in make_docstrings.versions().items())
    rows, base, ours = [], [], []
    load = []
    for seed in seeds:
        b = tfidf_logreg(path, seed)
        s = dnntune_tune(path, seed, budget, workers, ROOT / "runs" / "bench-text" / f"seed{seed}")
        load.append(os.getloadavg()[0])
        t = s["trials"]
        base.append(b["test"])
        ours.append(s["test"]["accuracy"])
        family = s["best"]["params"].get("model.family", "?")
        rows.append(f"| {seed} | {b['test']:.4f} (C={b['C']:g}, {b['seconds']:.0f} s) | "
                    f"**{s['test']['accuracy']:.4f}** | {t['complete']} / {t['pruned']} / {t['fail']} | "
                    f"{s['wall_seconds']:.0f} | {family} |")
    n_tr, n_va, n_te = b["sizes"]
    lines = [
        f"## Text classification: dnntune vs TF-IDF + logistic regression ({budget / 60:.0f}-minute budget)\n",
        f"Corpus: docstrings of {versions}: which library a docstring comes from (7 classes, {per_class} per "
        f"class, library names removed; `examples/data/make_docstrings.py`). dnntune's own split (seed below): "
        f"train {n_tr} / val {n_va} / test {n_te}, the same texts for both. TF-IDF: word 1–2-grams, sublinear tf, "
        f"LogisticRegression with C from {list(C_GRID)} on validation, refitted on train+val. dnntune: "
        f"`dnntune tune` on `{{data: {{name: text_csv, path: ..., max_length: {MAX_LENGTH}}}}}` (the default text "
        f"space), `--timeout {budget:.0f} --workers {workers}`, then the best recipe retrained on train+val. "
        "Test accuracy, each evaluated once.\n",
        "| seed | TF-IDF + LR test accuracy | dnntune test accuracy | trials (complete / pruned / failed) | "
        "dnntune wall s (search + retrain) | best family |",
        "|---|---|---|---|---|---|",
        *rows,
        f"\nMean over {len(seeds)} seed(s): TF-IDF + LR {_mean_std(base)}, dnntune {_mean_std(ours)}. Load average "
        f"after each seed: {', '.join(f'{v:.1f}' for v in load)} (the machine's 2 cores were shared with other "
        "work). Studies and reports: `runs/bench-text/` (not committed).",
        f"\nCommand: `DNNTUNE_BENCH_TEXT_BUDGET={budget:.0f} DNNTUNE_BENCH_TEXT_SEEDS={','.join(map(str, seeds))} "
        f"DNNTUNE_BENCH_TEXT_WORKERS={workers} python benchmarks/run.py text`. The issue's full run (15 minutes per "
        "side, seeds 0, 1, 2; about 50 minutes): `python benchmarks/run.py text`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
