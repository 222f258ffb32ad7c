"""Shared fixtures: a private dataset cache and tiny recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory):
    import os

    # generated datasets (mnist1d) are cached per test session, never in the user's home
    os.environ.setdefault("DNNTUNE_CACHE", str(tmp_path_factory.getbasetemp().parent / "dnntune-cache"))


def tiny(**sections) -> dict:
    """A small, fast recipe as plain data; sections given override the defaults."""
    raw = {"seed": 0, "data": {"name": "iris"}, "model": {"family": "mlp", "width": 16, "depth": 1},
           "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 3, "batch_size": 32}}
    raw.update(sections)
    return raw


def write_recipe(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path
