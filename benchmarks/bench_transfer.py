"""Does fine-tuning a pretrained CNN beat training it from scratch on a small, shifted target?

Source: MNIST-1D with 20,000 training samples (``num_samples: 25000``, the dataset's own 80/20 split, generation
seed 42, the default knobs). Target: an MNIST-1D variant generated with other knobs (more i.i.d. and correlated
noise, more shear, a wider scale range) and another generation seed, with N labelled samples (N = 100, 300,
1,000; 10 % of them held out for validation) and its own 1,000-sample test split (``num_samples: N + 1000``,
``train_split: N / (N + 1000)``).

The architecture is the one of ``examples/transfer-pretrain.yaml`` (cnn1d, 4 conv layers of 32 channels with
batch norm, max pooling, a global-average head). Per training seed (0, 1, 2) the source is pretrained once;
then at every N the same architecture is trained on the target for the same epochs: from scratch, and
initialized from the source with ``train.fine_tune`` (the head alone for 2 epochs with the backbone frozen,
then everything with the backbone at lr / 10). Two more arms show what the parts buy: ``init_from`` alone (no
freezing, one lr for all) and from scratch with 3× the epochs (is the scratch arm only short of training?).
All arms use the same optimizer, schedule, batch size and last-epoch weights (no early stopping: a 10-sample
validation split cannot select). Reported: test accuracy, mean ± std over seeds, and the mean
validation-accuracy learning curves. The test split is evaluated once per run, at the end.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SEEDS = (0, 1, 2)
LABELS = (100, 300, 1000)
ROWS = Path(__file__).resolve().parent / "results" / "transfer-rows.jsonl"
MODEL = {"family": "cnn1d", "channels": 32, "depth": 4, "kernel": 5, "pooling": "max", "batch_norm": True,
         "head": "avg"}
SHIFT = {"seed": 7, "iid_noise_scale": 0.05, "corr_noise_scale": 0.4, "shear_scale": 1.0, "scale_coeff": 0.6}


def _recipe(seed: int, data: dict, epochs: int, batch_size: int, **extra) -> dict:
    model = {**MODEL, **extra.pop("model", {})}
    return {"seed": seed, "data": {"name": "mnist1d", **data}, "model": model, "loss": {"name": "cross_entropy"},
            "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
            "schedule": {"name": "cosine", "warmup_epochs": 1},
            "train": {"epochs": epochs, "batch_size": batch_size, "threads": 1, "checkpoint": False,
                      "early_stopping": {"restore_best": False}, **extra.pop("train", {})}}


def arms(src: str) -> dict[str, tuple[dict, int]]:
    """The compared trainings on the target: recipe additions and the multiple of the epochs."""
    init = {"init_from": src}
    return {"scratch": ({}, 1),
            "fine_tune": ({"model": init, "train": {"fine_tune": {"freeze_epochs": 2, "lr_mult": 10}}}, 1),
            "init_only": ({"model": init}, 1),
            "scratch_3x": ({}, 3)}


ARM_NAMES = {"scratch": "from scratch", "fine_tune": "fine-tuned (fine_tune preset)",
             "init_only": "init_from only (no freeze, one lr)", "scratch_3x": "from scratch, 3× the epochs"}


def target_data(n: int) -> dict:
    return {**SHIFT, "num_samples": n + 1000, "train_split": n / (n + 1000), "val_fraction": 0.1}


def one_seed(seed: int, quick: bool) -> list[dict]:
    """Pretrain once, then fine-tune and train from scratch at every label count; rows as they arrive."""
    import contextlib
    import io

    import torch

    from dnntune.engine.trainer import train

    torch.set_num_threads(1)
    pre_epochs, epochs = (1, 2) if quick else (12, 30)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pretrain"
        pre = train(_recipe(seed, {"num_samples": 25000, "train_split": 0.8, "val_fraction": 0.05}, pre_epochs, 128),
                    out_dir=src)
        source_acc = pre.metrics["test"]["accuracy"]
        for n in LABELS:
            for arm, (extra, mult) in arms(str(src)).items():
                with contextlib.redirect_stderr(io.StringIO()):  # the init_from table
                    res = train(_recipe(seed, target_data(n), epochs * mult, 32, **extra))
                row = {"seed": seed, "labels": n, "arm": arm, "test_accuracy": res.metrics["test"]["accuracy"],
                       "source_test_accuracy": source_acc,
                       "curve": [h.get("val_accuracy") for h in res.history], "seconds": res.wall_seconds}
                rows.append(row)
                with open(ROWS, "a") as f:  # written as they arrive: a long run shows progress
                    f.write(json.dumps(row) + "\n")
    return rows


def _ms(xs: list[float]) -> str:
    m = statistics.mean(xs) * 100
    s = statistics.stdev(xs) * 100 if len(xs) > 1 else 0.0
    return f"{m:.1f} ± {s:.1f}"


def section(rows: list[dict], quick: bool) -> str:
    out = ["## Transfer learning: fine-tuning vs from scratch (bench_transfer)\n", __doc__.strip(), ""]
    src = [r["source_test_accuracy"] for r in rows if r["labels"] == LABELS[0] and r["arm"] == "scratch"]
    out.append(f"Source (pretraining) test accuracy: {_ms(src)} % over {len(src)} seeds.\n")
    out += ["Test accuracy (%), mean ± std over seeds; gain: fine-tuned minus from scratch (same epochs), in points, "
            "paired by seed.", "",
            "| target labels | " + " | ".join(ARM_NAMES.values()) + " | gain (points) |",
            "|---:|" + "---:|" * (len(ARM_NAMES) + 1)]
    verdict = []
    for n in LABELS:
        acc = {arm: [r["test_accuracy"] for r in rows if r["labels"] == n and r["arm"] == arm] for arm in ARM_NAMES}
        if not acc["scratch"] or not acc["fine_tune"]:
            continue
        gains = [b - a for a, b in zip(acc["scratch"], acc["fine_tune"])]
        out.append(f"| {n} | " + " | ".join(_ms(acc[a]) if acc[a] else "–" for a in ARM_NAMES)
                   + f" | {_ms(gains)} |")
        verdict.append((n, statistics.mean(gains) * 100))
    out.append("")
    few = [g for n, g in verdict if n <= 300]
    at_1000 = [g for n, g in verdict if n == 1000]
    met = bool(few) and max(few) >= 5 and bool(at_1000) and at_1000[0] >= 0
    out.append(f"Goal (fine-tuned ≥ 5 points above from scratch at a few hundred labels, never worse at 1,000): "
               f"**{'met' if met else 'not met'}** (mean gains: "
               + ", ".join(f"{g:+.1f} at {n}" for n, g in verdict) + ").\n")
    out += ["Learning curves: mean validation accuracy (%) over seeds, by epoch (validation: 10 % of the labels).",
            ""]
    for n in LABELS:
        curves = {arm: [r["curve"] for r in rows if r["labels"] == n and r["arm"] == arm]
                  for arm in ("scratch", "fine_tune", "init_only")}
        if not all(curves.values()):
            continue
        length = min(len(c) for cs in curves.values() for c in cs)
        marks = sorted({e for e in (1, 2, 3, 5, 10, 15, 20, 25, 30) if e <= length} | {length})
        out += [f"| {n} labels | " + " | ".join(f"ep {e}" for e in marks) + " |", "|---|" + "---:|" * len(marks)]
        for arm, cs in curves.items():
            means = [statistics.mean(c[e - 1] for c in cs) * 100 for e in marks]
            out.append(f"| {ARM_NAMES[arm]} | " + " | ".join(f"{m:.0f}" for m in means) + " |")
        out.append("")
    return "\n".join(out)


def run(quick: bool = False) -> str:
    ROWS.parent.mkdir(exist_ok=True)
    ROWS.write_text("")
    seeds = SEEDS[:2] if quick else SEEDS
    workers = int(os.environ.get("BENCH_WORKERS", "2"))
    with ProcessPoolExecutor(workers) as pool:
        rows = [r for rs in pool.map(one_seed, seeds, [quick] * len(seeds)) for r in rs]
    return section(rows, quick)
