"""A user's own dataset for dnntune: noisy 2-D spirals, generated (no download).

``@dnntune.register_dataset`` makes it nameable from an experiment (``data: {name: spirals, arms: 3}``);
the builder returns numpy arrays and dnntune splits, normalizes (training split only) and tests them
exactly as it does built-in data.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

import dnntune


class SpiralKnobs(BaseModel):
    samples: int = Field(900, ge=30, le=100_000, description="points over all arms")
    arms: int = Field(3, ge=2, le=10, description="spiral arms = classes")
    noise: float = Field(0.5, ge=0.0, description="std of Gaussian noise on the coordinates")
    seed: int = Field(0, ge=0, description="the generator's seed (the data, not the split)")


@dnntune.register_dataset("spirals", SpiralKnobs, task="classification", kind="tabular")
def spirals(knobs: SpiralKnobs):
    """Interleaved 2-D spiral arms, one class per arm."""
    rng = np.random.default_rng(knobs.seed)
    y = np.arange(knobs.samples) % knobs.arms
    r = rng.uniform(0.2, 1.0, knobs.samples)
    theta = 3.5 * r + 2 * np.pi * y / knobs.arms
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1) * 3
    x += rng.normal(0, knobs.noise, x.shape)
    return {"x": x.astype(np.float32), "y": y, "class_names": [f"arm{i}" for i in range(knobs.arms)]}
