"""The Python form: your own model and data without YAML files (run: python examples/plugins/python_api.py).

Registers nothing new: it imports the user model family of my_models.py (beside this file) and trains and
tunes it on numpy arrays and on a torch Dataset; dnntune splits and normalizes them exactly as built-in data.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

import dnntune

# import my_models.py from beside this file (as `plugins: [my_models]` would); worker processes import it too
dnntune.load_plugins(["my_models"], base_dir=Path(__file__).parent)


def blobs(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    return rng.normal(size=(n, 8)).astype(np.float32) + y[:, None] * 0.8, y


class Pairs(torch.utils.data.Dataset):
    """A map-style Dataset of (input, target) pairs: read once through a DataLoader."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.as_tensor(self.x[i]), int(self.y[i])


def main() -> None:
    x, y = blobs()
    recipe = {"seed": 0, "model": {"family": "gated_mlp", "width": 32}, "optim": {"name": "adamw", "lr": 0.01},
              "train": {"epochs": 10, "batch_size": 64}}
    out = Path(tempfile.mkdtemp())
    result = dnntune.train(recipe, out_dir=out / "arrays", data=(x, y))
    same = dnntune.train(recipe, data=Pairs(x, y), num_workers=0)
    print(f"arrays:  test accuracy {result.metrics['test']['accuracy']:.4f}")
    print(f"Dataset: test accuracy {same.metrics['test']['accuracy']:.4f} (same split, same normalization)")
    experiment = {**recipe, "model": {"family": "gated_mlp", "width": {"int": [8, 64], "log": True}},
                  "search": {"n_trials": 4, "workers": 2, "seed": 0}}
    summary = dnntune.tune(experiment, out / "tune", data=(x, y))  # 2 worker processes read out/tune/data.npz
    print(f"tuned:   test accuracy {summary['test']['accuracy']:.4f}; best model in {out / 'tune' / 'best'}")
    run = dnntune.load_run(out / "tune")
    print("predicted classes of 3 rows:", run.predict(x[:3]).labels)


if __name__ == "__main__":
    main()
