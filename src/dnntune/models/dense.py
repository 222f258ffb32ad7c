"""Families on flattened inputs: ``linear`` (logistic / linear regression) and ``mlp``."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..registry import Knobs, NoKnobs
from .core import MODELS, Activation, InputSpec, activation


class Linear(nn.Module):
    def __init__(self, in_features: int, out: int):
        super().__init__()
        self.fc = nn.Linear(in_features, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@MODELS.register("linear", NoKnobs, kinds=("tabular", "signal", "image"))
def linear(knobs: NoKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    """One linear layer on the flattened input: logistic regression (with cross-entropy) or linear regression."""
    return Linear(spec.flat_size, num_outputs)


class MLPKnobs(Knobs):
    depth: int = Field(2, ge=1, le=32, description="hidden layers")
    width: int = Field(256, ge=1, le=65536, description="units per hidden layer")
    activation: Activation = "relu"
    norm: Literal["none", "batch", "layer"] = "none"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    residual: bool = Field(False, description="skip connections around hidden layers after the first")


class Block(nn.Module):
    def __init__(self, d_in: int, d_out: int, knobs: MLPKnobs, residual: bool):
        super().__init__()
        norm = {"none": nn.Identity, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[knobs.norm]
        self.fc = nn.Linear(d_in, d_out)
        self.norm = norm(d_out) if knobs.norm != "none" else nn.Identity()
        self.act = activation(knobs.activation)
        self.drop = nn.Dropout(knobs.dropout) if knobs.dropout > 0 else nn.Identity()
        self.residual = residual and d_in == d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act(self.norm(self.fc(x))))
        return x + h if self.residual else h


class MLP(nn.Module):
    def __init__(self, in_features: int, out: int, knobs: MLPKnobs):
        super().__init__()
        dims = [in_features] + [knobs.width] * knobs.depth
        self.blocks = nn.Sequential(*[Block(a, b, knobs, knobs.residual) for a, b in zip(dims, dims[1:])])
        self.head = nn.Linear(dims[-1], out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x.flatten(1)))


@MODELS.register("mlp", MLPKnobs, kinds=("tabular", "signal", "image"))
def mlp(knobs: MLPKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    """Multi-layer perceptron on the flattened input (any data kind)."""
    return MLP(spec.flat_size, num_outputs, knobs)
