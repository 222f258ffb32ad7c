"""A user's own model family for dnntune: a small gated MLP with pydantic knobs.

Name this module in an experiment (``plugins: [my_models]``) or on the command line (``--plugin my_models``);
it is found on PYTHONPATH or beside the experiment file. Its knobs are validated like built-in ones and
can be search dimensions (``width: {int: [16, 64]}``).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field
from torch import nn

import dnntune


class GatedKnobs(BaseModel):
    """Knobs of ``gated_mlp``: a plain pydantic model (dnntune makes it strict: unknown keys are errors)."""

    width: int = Field(32, ge=4, le=1024, description="hidden units")
    depth: int = Field(2, ge=1, le=8, description="gated blocks")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class GatedBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.value, self.gate = nn.Linear(width, width), nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.value(self.norm(x)) * torch.sigmoid(self.gate(self.norm(x))))


class GatedMLP(nn.Module):
    def __init__(self, in_features: int, out: int, k: GatedKnobs):
        super().__init__()
        self.embed = nn.Linear(in_features, k.width)
        self.blocks = nn.Sequential(*[GatedBlock(k.width, k.dropout) for _ in range(k.depth)])
        self.classifier = nn.Linear(k.width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(self.embed(x.flatten(1))))


@dnntune.register_model("gated_mlp", GatedKnobs, kinds=("tabular", "signal", "image"),
                        backbone=("embed", "blocks"), head="classifier")
def gated_mlp(knobs: GatedKnobs, spec, num_outputs: int) -> nn.Module:
    """Gated residual MLP on the flattened input (a user plugin)."""
    return GatedMLP(spec.flat_size, num_outputs, knobs)
