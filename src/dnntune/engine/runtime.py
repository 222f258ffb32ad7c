"""What a run needs from its surroundings: the device, seeds, its identity and environment."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unavailable device is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available; use auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device: mps requested but not available; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)  # seeds CUDA too


def rng_state(device: torch.device) -> dict:
    """The global RNG states a run draws from (CPU, and CUDA on a CUDA device), for exact resume."""
    state = {"rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def recipe_hash(recipe) -> str:
    """Identity of a run for resuming: everything but the search section."""
    d = recipe.to_dict()
    d.pop("search", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _git_hash() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    """Versions, device, threads and git hash: written into every run's summary."""
    from .. import __version__

    return {"dnntune": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "threads": torch.get_num_threads(), "git": _git_hash()}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Model outputs for a whole split, in eval mode, batched."""
    model.eval()
    outs = [model(x[i:i + batch_size].to(device, non_blocking=True)) for i in range(0, len(x), batch_size)]
    return torch.cat(outs).float() if outs else torch.empty(0)
