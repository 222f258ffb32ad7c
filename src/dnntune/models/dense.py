"""Families on flattened inputs: ``linear`` (logistic / linear regression) and ``mlp``.

On tabular data whose encoder embeds categories (``InputSpec.info["embeddings"]``, see
:class:`dnntune.data.tabular.TabularEncoder`) both put an :class:`EmbeddingFront` before the network: one
``nn.Embedding`` per index feature, concatenated with the other features."""

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


class EmbeddingFront(nn.Module):
    """Index features → learned embeddings, concatenated with the remaining features (in their order).

    Row 0 of each table is the encoder's unknown slot: a fixed zero vector (``padding_idx=0``), as an unseen
    one-hot level is all zeros. Indices arrive as floats (one input tensor); they are rounded and clamped to
    the table, so the graph exports to ONNX as Gather ops."""

    def __init__(self, in_features: int, embeddings: list[dict]):
        super().__init__()
        cat = [int(e["index"]) for e in embeddings]
        if len(set(cat)) != len(cat) or not all(0 <= i < in_features for i in cat):
            raise ValueError(f"embedding indices {cat} do not fit {in_features} features")
        self.register_buffer("cat_idx", torch.tensor(cat, dtype=torch.long), persistent=False)
        self.register_buffer("num_idx", torch.tensor([i for i in range(in_features) if i not in set(cat)],
                                                     dtype=torch.long), persistent=False)
        self.register_buffer("top", torch.tensor([int(e["cardinality"]) - 1 for e in embeddings],
                                                 dtype=torch.long), persistent=False)
        self.tables = nn.ModuleList(nn.Embedding(int(e["cardinality"]), int(e["dim"]), padding_idx=0)
                                    for e in embeddings)
        self.out_features = in_features - len(cat) + sum(int(e["dim"]) for e in embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        codes = torch.minimum(x.index_select(1, self.cat_idx).round().long().clamp_min(0), self.top)
        parts = [x.index_select(1, self.num_idx)] + [t(codes[:, j]) for j, t in enumerate(self.tables)]
        return torch.cat(parts, dim=1)


class Embedded(nn.Module):
    """A network behind an :class:`EmbeddingFront`."""

    def __init__(self, front: EmbeddingFront, net: nn.Module):
        super().__init__()
        self.front, self.net = front, net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.front(x))


def _with_embeddings(spec: InputSpec, make) -> nn.Module:
    """``make(in_features)`` on the input, behind an embedding front when the encoder embeds categories."""
    embeddings = spec.info.get("embeddings") if spec.kind == "tabular" else None
    if not embeddings:
        return make(spec.flat_size)
    front = EmbeddingFront(spec.flat_size, embeddings)
    return Embedded(front, make(front.out_features))


@MODELS.register("linear", NoKnobs, kinds=("tabular", "signal", "image"))
def linear(knobs: NoKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    """One linear layer on the flattened input: logistic regression (with cross-entropy) or linear regression."""
    return _with_embeddings(spec, lambda n: Linear(n, num_outputs))


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
    return _with_embeddings(spec, lambda n: MLP(n, num_outputs, knobs))
